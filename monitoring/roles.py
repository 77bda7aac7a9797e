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


# What the Admin role may do in the Django admin: configuration and users; records are
# read-only there for everyone (their ModelAdmins refuse add/change/delete).
_ADMIN_PERMISSION_APPS = ("monitoring", "auth", "django_q")


def sync_role_permissions(**kwargs) -> None:
    """Give the Admin group every permission of Upstream's, auth's and the task queue's models.

    Run after each migrate (new models bring new permissions); idempotent.
    """
    from django.contrib.auth.models import Group, Permission

    group, _ = Group.objects.get_or_create(name=Role.ADMIN)
    perms = Permission.objects.filter(content_type__app_label__in=_ADMIN_PERMISSION_APPS)
    group.permissions.add(*perms)
    for name in (Role.OPERATOR, Role.VIEWER):
        Group.objects.get_or_create(name=name)


def role_label(user) -> str:
    if getattr(user, "is_superuser", False):
        return "Superuser"
    for role in (Role.ADMIN, Role.OPERATOR, Role.VIEWER):
        if role in roles_of(user):
            return role.value
    return "No role"
