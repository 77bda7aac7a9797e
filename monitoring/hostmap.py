"""Which integration a host belongs to, from the integrations' host patterns (cached)."""

from __future__ import annotations

import threading
import time
from typing import NamedTuple

from monitoring.models import Environment, Integration

__all__ = ["REFRESH_S", "Claim", "clear", "matches", "resolve", "specificity"]

REFRESH_S = 30.0
# When several integrations claim a host equally well and the sender named no environment,
# production wins: an unlabelled span is most likely live traffic.
_ENV_RANK = {env: i for i, env in enumerate(Environment.values)}


class Claim(NamedTuple):
    """One integration's pattern: ``exact`` host, or ``suffix`` (".paubox.net") for ``*.``."""

    integration_id: int
    environment: str
    pattern: str


def matches(pattern: str, host: str) -> bool:
    """Whether ``host`` (lower case, no port) falls under one host pattern.

    ``*.paubox.net`` matches ``api.paubox.net`` and ``eu.api.paubox.net`` but not
    ``paubox.net`` itself, as a TLS wildcard would not either.
    """
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def specificity(pattern: str) -> int:
    """Exact names beat wildcards; a longer wildcard beats a shorter one."""
    return 10_000 if not pattern.startswith("*.") else len(pattern)


_lock = threading.Lock()
_claims: tuple[Claim, ...] | None = None
_loaded_at = 0.0
_answers: dict[tuple[str, str | None], int | None] = {}


def clear() -> None:
    """Forget the cached patterns (after an edit in this process, and between tests)."""
    global _claims
    with _lock:
        _claims = None
        _answers.clear()


def _load() -> tuple[Claim, ...]:
    global _claims, _loaded_at
    claims = _claims
    if claims is not None and time.monotonic() - _loaded_at < REFRESH_S:
        return claims
    rows = Integration.objects.filter(active=True).exclude(host_patterns="")
    fresh = tuple(
        Claim(row.pk, row.environment, pattern)
        for row in rows.only("pk", "environment", "host_patterns")
        for pattern in row.host_pattern_list()
    )
    with _lock:
        _claims, _loaded_at = fresh, time.monotonic()
        _answers.clear()
    return fresh


def resolve(host: str, environment: str | None = None) -> int | None:
    """The id of the integration whose host patterns claim ``host`` best, or None.

    With an ``environment`` only integrations in it count. Patterns are reloaded from the
    database at most every ``REFRESH_S`` seconds; answers are cached between reloads.
    """
    host = host.strip().rstrip(".").lower()
    if host.count(":") == 1:
        host = host.split(":", 1)[0]  # a "host:port" form (bare IPv6 has several colons)
    claims = _load()
    key = (host, environment)
    if key in _answers:
        return _answers[key]
    best: tuple[int, int, int] | None = None
    found = None
    for claim in claims:
        if environment and claim.environment != environment:
            continue
        if matches(claim.pattern, host):
            rank = (-specificity(claim.pattern), _ENV_RANK.get(claim.environment, 99), claim[0])
            if best is None or rank < best:
                best, found = rank, claim.integration_id
    if len(_answers) > 4096:
        _answers.clear()
    _answers[key] = found
    return found
