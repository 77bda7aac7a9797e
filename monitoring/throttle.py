"""Throttling of credential guesses: failures per name and per address, growing lockouts."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import math
import time
import unicodedata
from collections.abc import Callable
from typing import NamedTuple

from django.conf import settings
from django.core.cache import BaseCache, caches
from django.http import HttpRequest

from monitoring import audit
from monitoring.models import ActorType

# A subject locked again within this time is locked twice as long as the time before.
STRIKE_MEMORY_S = 24 * 3600


class Limits(NamedTuple):
    per_name: int  # failures for one name (username, API key prefix) within the window
    per_address: int  # failures from one address (an IPv6 /64) within the window
    window_s: int
    lockout_s: int  # the first lockout; each repeat within STRIKE_MEMORY_S doubles it
    lockout_max_s: int

    @classmethod
    def signin(cls) -> Limits:
        conf = settings.UPSTREAM
        return cls(
            per_name=conf["SIGNIN_FAILURES_PER_USER"],
            per_address=conf["SIGNIN_FAILURES_PER_ADDRESS"],
            window_s=conf["SIGNIN_WINDOW_S"],
            lockout_s=conf["SIGNIN_LOCKOUT_S"],
            lockout_max_s=conf["SIGNIN_LOCKOUT_MAX_S"],
        )


class Lock(NamedTuple):
    """A lockout in force on one subject."""

    key: str  # the subject's cache key stem
    kind: str  # "name" or "address": which limit was reached
    until: float  # epoch seconds

    def retry_after(self, now: float | None = None) -> int:
        """Whole seconds until the lockout ends (at least 1), for a Retry-After header."""
        return max(1, math.ceil(self.until - (time.time() if now is None else now)))


def normalize_name(name: str) -> str:
    # One subject however it is typed: "Ada", " ada" and "ａｄａ" share a counter.
    return unicodedata.normalize("NFKC", str(name)).strip().casefold()[:150]


def address_subject(address: str | None) -> str | None:
    """The address a limit applies to: IPv4 as is, IPv6 by /64 (one host holds a whole /64)."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class Throttle:
    """Counts failed guesses of one kind of credential and refuses a subject past its limit.

    The caller asks `check` before it verifies anything (a refusal costs no password hash),
    reports each verdict with `failed` or `succeeded`, and hands a refusal to `refused`,
    which audits a refused attempt only now and then, with a count of the ones in between.
    """

    def __init__(
        self,
        scope: str,
        *,
        audit_action: str,
        limits: Callable[[], Limits],
        name_label: str = "username",
        cache_alias: str = "default",
    ) -> None:
        self.scope = scope
        self.audit_action = audit_action
        self.limits = limits
        self.name_label = name_label  # what the name is, in audit rows ("key prefix", …)
        self.cache_alias = cache_alias

    @property
    def cache(self) -> BaseCache:
        return caches[self.cache_alias]

    def _stem(self, kind: str, value: str) -> str:
        # Hashed: cache keys have a length and character limit, and names are anyone's input.
        digest = hashlib.sha256(value.encode()).hexdigest()[:32]
        return f"throttle:{self.scope}:{kind}:{digest}"

    def _subjects(
        self, name: str, address: str | None, limits: Limits
    ) -> list[tuple[str, str, int]]:
        subjects = [("name", self._stem("name", normalize_name(name)), limits.per_name)]
        network = address_subject(address)
        if network is not None:
            subjects.append(("address", self._stem("address", network), limits.per_address))
        return subjects

    def _count(self, key: str, timeout: int) -> int:
        self.cache.add(key, 0, timeout)
        try:
            return self.cache.incr(key)
        except ValueError:  # expired between add and incr
            self.cache.set(key, 1, timeout)
            return 1

    def check(self, name: str, address: str | None) -> Lock | None:
        """The lockout (the longest, if both) that refuses this name or address now, if any."""
        stems = [stem for _kind, stem, _limit in self._subjects(name, address, self.limits())]
        found = self.cache.get_many([f"{stem}:lock" for stem in stems])
        now = time.time()
        locks = [Lock(*value) for value in found.values() if value[2] > now]
        return max(locks, key=lambda lock: lock.until) if locks else None

    def failed(self, name: str, address: str | None) -> Lock | None:
        """Count one failed guess; return the lockout it started, if it reached a limit."""
        limits = self.limits()
        started = None
        for kind, stem, limit in self._subjects(name, address, limits):
            if self._count(f"{stem}:fails", limits.window_s) < limit:
                continue
            strike = self._count(f"{stem}:strikes", STRIKE_MEMORY_S)
            duration = min(limits.lockout_max_s, limits.lockout_s * 2 ** min(strike - 1, 30))
            lock = Lock(stem, kind, time.time() + duration)
            self.cache.set(f"{stem}:lock", tuple(lock), duration)
            # The next window starts after the lockout, with the strike remembered.
            self.cache.delete(f"{stem}:fails")
            if started is None or lock.until > started.until:
                started = lock
        return started

    def succeeded(self, name: str) -> None:
        """The name proved itself: forget its failures (its address keeps its count)."""
        stem = self._stem("name", normalize_name(name))
        self.cache.delete_many([f"{stem}:fails", f"{stem}:strikes"])

    def refused(self, lock: Lock, *, request: HttpRequest | None, name: str) -> bool:
        """Count a refused attempt, and audit it if it is the 1st, 2nd, 4th, 8th … of its
        lockout; say whether it was audited.

        Each row carries `attempts`: the refused attempts since the previous row for this
        subject, this one included. So a lockout costs at most 1 + log2(attempts) rows, a
        burst shows at once with at least half its attempts, and the rows add up to every
        attempt (bar those after the last row of an attack that stopped, which the next row
        for the subject carries).
        """
        pending_key = f"{lock.key}:pending"
        pending = self._count(pending_key, STRIKE_MEMORY_S)
        nth = self._count(f"{lock.key}:refused:{lock.until:.6f}", lock.retry_after() + 1)
        if nth & (nth - 1):  # not a power of two
            return False
        typed = str(name)[:150]
        audit.record(
            self.audit_action,
            request=request,
            actor=typed or "(blank)",
            actor_type=ActorType.USER,
            target_repr=f"{self.name_label} {typed!r}",
            after={
                self.name_label: typed,
                "throttled": lock.kind,
                "attempts": pending,
                "retry_after_s": lock.retry_after(),
            },
        )
        # Not delete: attempts refused meanwhile belong to the next row.
        with contextlib.suppress(ValueError):
            self.cache.decr(pending_key, pending)
        return True


SIGNIN = Throttle("signin", audit_action=audit.Actions.SIGNIN_FAILED, limits=Limits.signin)
