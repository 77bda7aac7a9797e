"""What the caller's request says about its credential and version, without the secret.

Read on the caller's side, before anything leaves the process:

* ``key_fingerprint`` — a keyed hash (HMAC-SHA256, 16 hex characters) of the credential the
  request carries (``Authorization``, ``X-Api-Key`` …; a scheme word such as ``Bearer`` or
  Paubox's ``Token token=`` is dropped first). Upstream sees the same key used in two places,
  and how long a key has been in use, and never the key. The hash key is
  ``UPSTREAM_FINGERPRINT_KEY`` (set the same value in every app to compare keys across them);
  a fixed default otherwise, which is safe for the long random keys providers issue.
* ``version_header`` — the *name* of an API-version header the request sends
  (``Stripe-Version``, ``anthropic-version`` …), never its value: whether calls pin a version.
* ``token_age_s`` — for a JWT bearer token, seconds since its ``iat`` (no signature check;
  nothing else is read from it), so an expired token can be told from a rejected one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Iterable

CREDENTIAL_HEADERS = frozenset(
    {"authorization", "x-api-key", "api-key", "x-auth-token", "x-goog-api-key", "apikey"}
)
VERSION_HEADERS = {
    name.lower(): name
    for name in (
        "Stripe-Version",
        "anthropic-version",
        "OpenAI-Version",
        "X-GitHub-Api-Version",
        "Notion-Version",
        "API-Version",
        "X-API-Version",
        "Accept-Version",
        "Twilio-Version",
    )
}
FACT_NAMES = CREDENTIAL_HEADERS | frozenset(VERSION_HEADERS)
FACT_NAMES_BYTES = frozenset(n.encode() for n in FACT_NAMES)
_SCHEMES = ("bearer ", "token token=", "token ", "basic ", "apikey ", "key ")
_DEFAULT_KEY = b"upstream-client key fingerprint v1"
_CACHE_MAX = 256
_cache: dict[tuple[str, str], tuple[dict, float | None]] = {}


def _hash_key() -> bytes:
    configured = os.environ.get("UPSTREAM_FINGERPRINT_KEY", "")
    return configured.encode() if configured else _DEFAULT_KEY


def fingerprint(credential: str) -> str:
    """The keyed fingerprint of a credential header's value (scheme word dropped)."""
    value = credential.strip()
    lower = value.lower()
    for scheme in _SCHEMES:
        if lower.startswith(scheme):
            value = value[len(scheme) :].strip().strip('"')
            break
    return hmac.new(_hash_key(), value.encode("utf-8", "replace"), hashlib.sha256).hexdigest()[:16]


def _jwt_issued_at(credential: str) -> float | None:
    token = credential.strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    parts = token.split(".")
    if len(parts) != 3 or len(parts[1]) > 4096:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return None
    iat = payload.get("iat") if isinstance(payload, dict) else None
    if isinstance(iat, bool) or not isinstance(iat, int | float):
        return None
    return float(iat)


def of_pairs(pairs: Iterable[tuple[str, str]], now: float | None = None) -> dict | None:
    """The facts of a request from its (lower-case name, value) header pairs; None if none.

    Only headers in FACT_NAMES are read; callers pass those alone when they can filter cheaply.
    ``now`` (epoch seconds, default the current time) is when the request was sent: a
    token's age is taken then, even when the event is built later on another thread.
    """
    credential = version = ""
    for name, value in pairs:
        if name in CREDENTIAL_HEADERS:
            if not credential:
                credential = value
        elif name in VERSION_HEADERS:
            version = VERSION_HEADERS[name]
    if not credential and not version:
        return None
    key = (credential, version)
    found = _cache.get(key)
    if found is None:
        facts: dict = {}
        if credential:
            facts["key_fingerprint"] = fingerprint(credential)
        if version:
            facts["version_header"] = version
        found = (facts, _jwt_issued_at(credential) if credential else None)
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        _cache[key] = found
    facts, issued = found
    if issued is None:
        return facts
    now = time.time() if now is None else now
    return {**facts, "token_age_s": max(0.0, round(now - issued, 1))}


def of_triples(triples, now: float | None = None) -> dict | None:
    """The facts of httpx/httpx2 request headers (their raw (name, lower name, value) list)."""
    pairs = (
        (n.decode("latin-1"), v.decode("latin-1")) for _, n, v in triples if n in FACT_NAMES_BYTES
    )
    return of_pairs(pairs, now)


def of_httpx(request, now: float | None = None) -> dict | None:
    """The facts of an httpx/httpx2 request (its raw header list, read once)."""
    return of_triples(request.headers._list, now)


def of_mapping(headers, now: float | None = None) -> dict | None:
    """The facts of a requests request (a case-insensitive mapping)."""
    return of_pairs(
        ((name.lower(), value) for name, value in headers.items() if name.lower() in FACT_NAMES),
        now,
    )
