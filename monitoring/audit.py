"""The append-only, hash-chained audit log: one call to record, one to verify."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import connection, models, transaction
from django.db.backends.signals import connection_created
from django.dispatch import receiver
from django.utils.ipv6 import clean_ipv6_address

from monitoring.models import ActorType, AuditLog
from monitoring.redaction import is_secret_name

GENESIS = "0" * 64
MASK = "[masked]"
# Any constant works: it only has to be the same in every process writing audit rows.
_PG_LOCK_ID = 0x5570_5354  # "UpST"

_maintenance = threading.local()


class Actions:
    SIGNIN = "auth.signin"
    SIGNIN_FAILED = "auth.signin_failed"
    SIGNOUT = "auth.signout"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


def _is_secret(name: str) -> bool:
    # Field and key names whose values never enter the audit log: redaction's one rule.
    return is_secret_name(name)


def _jsonable(value):
    if isinstance(value, dict):
        return {
            str(k): (MASK if _is_secret(str(k)) and v not in ("", None) else _jsonable(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def snapshot(obj: models.Model, fields: list[str] | None = None) -> dict:
    """The object's concrete field values (or just `fields`) as JSON, secret-looking ones masked."""
    data = {}
    for field in obj._meta.concrete_fields:
        if fields is not None and field.name not in fields:
            continue
        value = getattr(obj, field.attname)
        if _is_secret(field.name) and value not in ("", None):
            data[field.name] = MASK
        else:
            data[field.name] = _jsonable(value)
    return data


def client_ip(request) -> str | None:
    """The client's address, in the form the database will store (so the hash matches)."""
    if request is None:
        return None
    raw = request.META.get("REMOTE_ADDR", "")
    if settings.USE_X_FORWARDED_FOR:
        raw = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")[0].strip() or raw
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        return None
    return clean_ipv6_address(raw) if ":" in raw else raw


def _canonical(row: dict) -> str:
    fields = {
        "seq": row["seq"],
        "created": row["created"].astimezone(dt.UTC).isoformat(timespec="microseconds"),
        "actor_type": row["actor_type"],
        "actor_id": row["actor_id"],
        "actor": row["actor"],
        "action": row["action"],
        "target_type": row["target_type"],
        "target_id": row["target_id"],
        "target_repr": row["target_repr"],
        "before": row["before"],
        "after": row["after"],
        "ip": row["ip"],
        "user_agent": row["user_agent"],
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _chain_hash(prev_hash: str, row: dict) -> str:
    return hashlib.sha256((prev_hash + _canonical(row)).encode()).hexdigest()


def record(
    action: str,
    *,
    request=None,
    user=None,
    actor: str | None = None,
    actor_type: str | None = None,
    target: models.Model | None = None,
    target_repr: str | None = None,
    before: dict | None = None,
    after: dict | None = None,
) -> AuditLog:
    """Append one audit row. The actor is the request's user unless `user`/`actor` is given."""
    from django.utils import timezone

    if user is None and request is not None and getattr(request, "user", None) is not None:
        user = request.user if request.user.is_authenticated else None
    if user is not None:
        actor_type, actor_id, actor_name = ActorType.USER, str(user.pk), user.get_username()
    else:
        actor_type = actor_type or ActorType.SYSTEM
        actor_id, actor_name = "", actor or "system"

    row = {
        "created": timezone.now(),
        "actor_type": str(actor_type),
        "actor_id": actor_id,
        "actor": actor_name[:150],
        "action": action[:50],
        "target_type": target._meta.label if target is not None else "",
        "target_id": str(target.pk) if target is not None and target.pk is not None else "",
        "target_repr": (target_repr if target_repr is not None else str(target or ""))[:300],
        "before": _jsonable(before) if before is not None else None,
        "after": _jsonable(after) if after is not None else None,
        "ip": client_ip(request),
        "user_agent": (request.META.get("HTTP_USER_AGENT", "") if request else "")[:300],
    }
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_PG_LOCK_ID])
        # On SQLite the IMMEDIATE transaction already holds the write lock.
        last = AuditLog.objects.order_by("-seq").values("seq", "hash").first()
        row["seq"] = (last["seq"] + 1) if last else 1
        row["prev_hash"] = last["hash"] if last else GENESIS
        row["hash"] = _chain_hash(row["prev_hash"], row)
        entry = AuditLog(**row)
        entry.save(force_insert=True)
    return entry


def record_change(
    request,
    obj: models.Model,
    before: dict | None,
    *,
    deleted: bool = False,
    fields: list[str] | None = None,
):
    """Audit a create (before=None), update or delete of a configuration object."""
    if deleted:
        return record(Actions.DELETE, request=request, target=obj, before=before)
    after = snapshot(obj, fields)
    if before is None:
        return record(Actions.CREATE, request=request, target=obj, after=after)
    changed = {k for k in after if before.get(k) != after.get(k)}
    if not changed:
        return None
    return record(
        Actions.UPDATE,
        request=request,
        target=obj,
        before={k: before.get(k) for k in sorted(changed)},
        after={k: after[k] for k in sorted(changed)},
    )


@dataclass
class ChainReport:
    ok: bool
    rows: int
    bad_seq: int | None = None
    bad_id: int | None = None
    reason: str = ""


def verify_chain(chunk_size: int = 2000) -> ChainReport:
    """Walk the chain in order; report the first row that was edited, removed or reordered."""
    fields = [
        "id", "seq", "created", "actor_type", "actor_id", "actor", "action", "target_type",
        "target_id", "target_repr", "before", "after", "ip", "user_agent", "prev_hash", "hash",
    ]  # fmt: skip
    prev_hash, expected_seq, rows = GENESIS, 1, 0
    qs = AuditLog.objects.order_by("seq").values(*fields)
    for row in qs.iterator(chunk_size=chunk_size):
        rows += 1
        where = {"bad_seq": row["seq"], "bad_id": row["id"]}
        if row["seq"] != expected_seq:
            missing = f"rows {expected_seq}–{row['seq'] - 1}" if row["seq"] > expected_seq else ""
            reason = f"sequence jumps from {expected_seq - 1} to {row['seq']}"
            if missing:
                reason += f" ({missing} removed)"
            return ChainReport(False, rows, reason=reason, **where)
        if row["prev_hash"] != prev_hash:
            reason = "previous-hash link broken (a row before it was removed or reordered)"
            return ChainReport(False, rows, reason=reason, **where)
        if _chain_hash(prev_hash, row) != row["hash"]:
            return ChainReport(
                False, rows, reason="content does not match its hash (edited)", **where
            )
        prev_hash, expected_seq = row["hash"], expected_seq + 1
    return ChainReport(True, rows)


@contextlib.contextmanager
def maintenance() -> Iterator[None]:
    """Let this thread's SQLite connection delete audit rows (test database flushes only)."""
    _maintenance.on = True
    try:
        yield
    finally:
        _maintenance.on = False


@receiver(connection_created)
def _register_sqlite_guard(sender, connection, **kwargs):
    # The SQLite triggers consult this function; any other client (the sqlite3 shell, a script)
    # lacks it, so its UPDATE or DELETE on the audit table fails too.
    if connection.vendor == "sqlite":
        connection.connection.create_function(
            "upstream_audit_writable", 0, lambda: 1 if getattr(_maintenance, "on", False) else 0
        )


@receiver(user_logged_in)
def _on_signin(sender, request, user, **kwargs):
    record(Actions.SIGNIN, request=request, user=user, target=user)


@receiver(user_logged_out)
def _on_signout(sender, request, user, **kwargs):
    if user is not None:
        record(Actions.SIGNOUT, request=request, user=user, target=user)


@receiver(user_login_failed)
def _on_signin_failed(sender, credentials, request=None, **kwargs):
    # Only the username tried: Django already masks the password, and we never keep it at all.
    username = str(credentials.get("username", ""))[:150]
    record(
        Actions.SIGNIN_FAILED,
        request=request,
        actor=username or "(blank)",
        actor_type=ActorType.USER,
        target_repr=f"username {username!r}",
        after={"username": username},
    )
