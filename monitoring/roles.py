"""Who may do what: the three roles (Django groups) and the one function that decides access."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    VIEWER = "Viewer"
    OPERATOR = "Operator"
    ADMIN = "Admin"


class Action(StrEnum):
    VIEW = "view"  # read every page
    OPERATE = "operate"  # acknowledge / silence alerts, run probes
    CONFIGURE = "configure"  # integrations, probes, rules, users


# Each action lists the roles allowed to do it; superusers may do everything.
_ALLOWED = {
    Action.VIEW: {Role.VIEWER, Role.OPERATOR, Role.ADMIN},
    Action.OPERATE: {Role.OPERATOR, Role.ADMIN},
    Action.CONFIGURE: {Role.ADMIN},
}


def roles_of(user) -> set[str]:
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return set()
    # Cached on the user object: a page asks several times per request.
    cached = getattr(user, "_upstream_roles", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))
        user._upstream_roles = cached
    return cached


def can(user, action: Action | str) -> bool:
    """The single place that decides whether `user` may perform `action`."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    if user.is_superuser:
        return True
    return bool(roles_of(user) & _ALLOWED[Action(action)])


# What the Admin role may do in the Django admin: configure Upstream (records' ModelAdmins
# refuse changes to everyone) and manage accounts within the three roles. Never: edit groups or
# their permissions (that would let it mint new powers), or touch the task queue, whose schedules
# name the Python function the worker runs; those are for superusers.
_ADMIN_AUTH_CODENAMES = (
    "add_user", "change_user", "delete_user", "view_user", "view_group", "view_permission",
)  # fmt: skip


def admin_role_permissions():
    """The Admin group's permissions, exactly (a queryset of Permission)."""
    from django.contrib.auth.models import Permission
    from django.db.models import Q

    return Permission.objects.filter(
        Q(content_type__app_label__in=("monitoring", "api"))
        | Q(content_type__app_label="auth", codename__in=_ADMIN_AUTH_CODENAMES)
        | Q(content_type__app_label="django_q", codename__startswith="view_")
    )


def sync_role_permissions(**kwargs) -> None:
    """Make the three groups exist and the Admin group hold exactly admin_role_permissions().

    Run after each migrate (new models bring new permissions); idempotent. Permissions granted
    beyond that (an older release gave the task queue and group editing away) are taken back,
    and a group that held permissions and now holds others gets one audit row saying which.
    """
    from django.contrib.auth.models import Group
    from django.db import transaction

    from monitoring import audit, identity

    with identity.quietly(), transaction.atomic():
        group, _ = Group.objects.get_or_create(name=Role.ADMIN)
        had = set(group.permissions.select_related("content_type"))
        wanted = set(admin_role_permissions().select_related("content_type"))
        group.permissions.set(wanted)
        for name in (Role.OPERATOR, Role.VIEWER):
            Group.objects.get_or_create(name=name)
    # A group without permissions is a fresh database's (its migration creates the groups).
    if had and had != wanted:
        audit.record(
            "role.permissions_sync",
            target=group,
            before={"removed": sorted(identity.permission_label(p) for p in had - wanted)},
            after={"added": sorted(identity.permission_label(p) for p in wanted - had)},
        )


def role_label(user) -> str:
    if getattr(user, "is_superuser", False):
        return "Superuser"
    for role in (Role.ADMIN, Role.OPERATOR, Role.VIEWER):
        if role in roles_of(user):
            return role.value
    return "No role"
