"""Changes that grant power (accounts, roles, permissions, task schedules): audited, bounded."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import get_hasher, identify_hasher, is_password_usable
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save
from django.dispatch import receiver
from django_q.models import Schedule

from monitoring import audit

User = get_user_model()

USER_CREATE = "user.create"
USER_UPDATE = "user.update"
USER_DELETE = "user.delete"
USER_PASSWORD = "user.password_change"  # noqa: S105 (an action name)
GROUP_CREATE = "group.create"
GROUP_UPDATE = "group.update"
GROUP_DELETE = "group.delete"
# Membership changes are "<relation>.add" / "<relation>.remove", e.g. "user.groups.add".
USER_GROUPS = "user.groups"
USER_PERMISSIONS = "user.permissions"
GROUP_PERMISSIONS = "group.permissions"

# What a user row says about its holder; the password column is never copied anywhere.
USER_FIELDS = (
    "username",
    "first_name",
    "last_name",
    "email",
    "is_active",
    "is_staff",
    "is_superuser",
)

# Signals carry no request: the admin views that change accounts name their user here, so the
# rows they cause say who acted and from where (anything else is recorded as "system").
_acting: contextvars.ContextVar[tuple | None] = contextvars.ContextVar(
    "upstream_acting", default=None
)
_quiet: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "upstream_identity_quiet", default=False
)


@contextlib.contextmanager
def acting(request=None, *, user=None) -> Iterator[None]:
    """Attribute the identity changes made inside this block to `request` (or `user`)."""
    token = _acting.set((request, user))
    try:
        yield
    finally:
        _acting.reset(token)


@contextlib.contextmanager
def quietly() -> Iterator[None]:
    """Suppress the per-change rows; only for roles.sync_role_permissions, which records one
    summary row itself (a fresh database's groups would otherwise fill the log at migrate)."""
    token = _quiet.set(True)
    try:
        yield
    finally:
        _quiet.reset(token)


def _record(action: str, target: models.Model, before=None, after=None) -> None:
    if _quiet.get():
        return
    request, user = _acting.get() or (None, None)
    audit.record(action, request=request, user=user, target=target, before=before, after=after)


def user_facts(user) -> dict:
    return {name: getattr(user, name) for name in USER_FIELDS}


def permission_label(permission: Permission) -> str:
    return f"{permission.content_type.app_label}.{permission.codename}"


# --- accounts -------------------------------------------------------------------------------


@receiver(pre_save, sender=User)
def _remember_user_before(sender, instance, update_fields=None, **kwargs):
    instance._upstream_before = None
    if instance._state.adding or instance.pk is None:
        return
    # Sign-in stamps last_login on every login; the sign-in row already says it happened.
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return
    before = User._base_manager.filter(pk=instance.pk).values(*USER_FIELDS, "password").first()
    if before is not None:
        only_password = update_fields is not None and set(update_fields) == {"password"}
        raw_set = getattr(instance, "_password", None) is not None
        before["_rehash"] = only_password and not raw_set and _outdated(before["password"])
    instance._upstream_before = before


def _outdated(encoded: str) -> bool:
    """Whether check_password() would re-hash this hash on the next correct sign-in.

    That re-hash saves only the password, with no raw password set: not a change of password.
    Any other such save (set_unusable_password(), a hash put in place) is one.
    """
    if not is_password_usable(encoded):
        return False
    try:
        hasher = identify_hasher(encoded)
    except ValueError:
        return False
    preferred = get_hasher("default")
    return hasher.algorithm != preferred.algorithm or preferred.must_update(encoded)


@receiver(post_save, sender=User)
def _audit_user_save(sender, instance, created, update_fields=None, **kwargs):
    if created:
        _record(USER_CREATE, instance, after=user_facts(instance))
        return
    before = getattr(instance, "_upstream_before", None)
    instance._upstream_before = None
    if before is None:
        return
    saved = set(update_fields) if update_fields is not None else None
    changed = [
        name
        for name in USER_FIELDS
        if (saved is None or name in saved) and before[name] != getattr(instance, name)
    ]
    if changed:
        _record(
            USER_UPDATE,
            instance,
            before={name: before[name] for name in changed},
            after={name: getattr(instance, name) for name in changed},
        )
    password_saved = saved is None or "password" in saved
    if password_saved and before["password"] != instance.password and not before["_rehash"]:
        # Only that it changed, and whether a password still signs in: never the hash.
        _record(USER_PASSWORD, instance, after={"usable": instance.has_usable_password()})


@receiver(post_delete, sender=User)
def _audit_user_delete(sender, instance, **kwargs):
    _record(USER_DELETE, instance, before=user_facts(instance))


@receiver(pre_save, sender=Group)
def _remember_group_name(sender, instance, **kwargs):
    instance._upstream_name = None
    if not instance._state.adding and instance.pk is not None:
        row = Group._base_manager.filter(pk=instance.pk).values_list("name", flat=True).first()
        instance._upstream_name = row


@receiver(post_save, sender=Group)
def _audit_group_save(sender, instance, created, **kwargs):
    if created:
        _record(GROUP_CREATE, instance, after={"name": instance.name})
        return
    old = getattr(instance, "_upstream_name", None)
    if old is not None and old != instance.name:
        _record(GROUP_UPDATE, instance, before={"name": old}, after={"name": instance.name})


@receiver(pre_delete, sender=Group)
def _remember_group_members(sender, instance, **kwargs):
    # The membership rows go without m2m signals, so the delete row names who lost the group.
    instance._upstream_members = sorted(instance.user_set.values_list("username", flat=True))


@receiver(post_delete, sender=Group)
def _audit_group_delete(sender, instance, **kwargs):
    members = getattr(instance, "_upstream_members", [])
    _record(GROUP_DELETE, instance, before={"name": instance.name, "members": members})


# --- memberships and permissions --------------------------------------------------------------

# through model -> (action prefix, key in the row, name of the many-to-many field on the owner)
_RELATIONS = {
    User.groups.through: (USER_GROUPS, "groups", "groups"),
    User.user_permissions.through: (USER_PERMISSIONS, "permissions", "user_permissions"),
    Group.permissions.through: (GROUP_PERMISSIONS, "permissions", "permissions"),
}


def _labels(objects: Iterable[models.Model]) -> list[str]:
    return sorted(
        permission_label(obj) if isinstance(obj, Permission) else str(obj) for obj in objects
    )


def _pairs(instance, reverse: bool, model, pk_set, field: str) -> list[tuple]:
    """(owner, the objects it gains or loses) for one m2m signal, seen from the owner's side."""
    if pk_set is None:  # a clear(): everything related now
        if reverse:
            owners = model._base_manager.filter(**{field: instance})
            return [(owner, [instance]) for owner in owners]
        related = getattr(instance, field).all()
        if related.model is Permission:
            related = related.select_related("content_type")
        return [(instance, list(related))]
    if reverse:
        return [(owner, [instance]) for owner in model._base_manager.filter(pk__in=pk_set)]
    related = model._base_manager.filter(pk__in=pk_set)
    if model is Permission:
        related = related.select_related("content_type")
    return [(instance, list(related))]


def _on_membership_change(sender, instance, action, reverse, model, pk_set, **kwargs):
    if _quiet.get():
        return
    prefix, key, field = _RELATIONS[sender]
    if action == "pre_clear":
        instance._upstream_clearing = _pairs(instance, reverse, model, None, field)
        return
    if action == "post_clear":
        pairs, verb = getattr(instance, "_upstream_clearing", []), "remove"
        instance._upstream_clearing = []
    elif action in ("post_add", "post_remove"):
        if not pk_set:
            return
        pairs, verb = _pairs(instance, reverse, model, pk_set, field), action[5:]
    else:
        return
    for owner, objects in pairs:
        if objects:
            _record(f"{prefix}.{verb}", owner, after={key: _labels(objects)})


for _through in _RELATIONS:
    m2m_changed.connect(_on_membership_change, sender=_through, dispatch_uid=_through._meta.label)


# --- task schedules ---------------------------------------------------------------------------


def allowed_task_funcs() -> frozenset[str]:
    """The only functions a schedule may name: Upstream's own entry points."""
    from monitoring.tasks import SCHEDULES

    return frozenset(spec.func for spec in SCHEDULES)


def former_task_funcs() -> dict[str, str]:
    """Older dotted paths of those entry points, still importable: setup_upstream moves them."""
    from monitoring.tasks import FORMER_PATHS

    allowed = allowed_task_funcs()
    return {old: new for old, new in FORMER_PATHS.items() if new in allowed}


def schedule_problems(func: str | None, hook: str | None) -> dict[str, str]:
    """Why a schedule with this func and hook must not run, by field; empty when it may.

    The worker imports and calls whatever dotted path a schedule names (`os.system` included),
    and calls its hook with the result, so both are limited to code Upstream ships.
    """
    problems = {}
    allowed = allowed_task_funcs()
    if func not in allowed and func not in former_task_funcs():
        names = ", ".join(sorted(allowed))
        problems["func"] = f"{func!r} is not one of Upstream's task entry points ({names})."
    if hook:
        problems["hook"] = f"{hook!r}: Upstream's schedules take no hook."
    return problems


@receiver(pre_save, sender=Schedule)
def _refuse_foreign_schedules(sender, instance, **kwargs):
    problems = schedule_problems(instance.func, instance.hook)
    if problems:
        raise ValidationError(problems)
