"""API key authentication for API views: Bearer keys, scopes, per-key rate limits, and
failed keys counted (and throttled) like failed sign-ins."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import wraps
from typing import NamedTuple

from django.conf import settings
from django.core.cache import caches
from django.http import HttpRequest, HttpResponse

from api.models import KEY_PREFIX, PREFIX_LENGTH, ApiKey
from api.problems import Problem
from monitoring import audit, throttle
from monitoring.models import ActorType

# Failed keys share the sign-in limits and audit action, so the sign-in failures rule
# counts them; the rows say "key prefix" and actor type API key.
FAILED_KEYS = throttle.Throttle(
    "apikey",
    audit_action=audit.Actions.SIGNIN_FAILED,
    limits=throttle.Limits.signin,
    name_label="key prefix",
)
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="upstream"'}


class RateLimit(NamedTuple):
    limit: int  # requests per window (the burst)
    remaining: int
    reset_s: int  # seconds until the window ends
    window_s: int

    def headers(self) -> dict[str, str]:
        """``RateLimit`` / ``RateLimit-Policy`` as in draft-ietf-httpapi-ratelimit-headers."""
        return {
            "RateLimit-Policy": f'"burst";q={self.limit};w={self.window_s}',
            "RateLimit": f'"burst";r={self.remaining};t={self.reset_s}',
        }


def key_prefix(key: str) -> str:
    """The visible part of a presented key, safe to log and audit (never the secret)."""
    return key[:PREFIX_LENGTH] if key.startswith(KEY_PREFIX) else key[:4] + "…"


def _fail(request: HttpRequest, prefix: str, reason: str) -> Problem:
    address = audit.client_ip(request)
    FAILED_KEYS.failed(prefix, address)
    audit.record(
        audit.Actions.SIGNIN_FAILED,
        request=request,
        actor=prefix or "(blank)",
        actor_type=ActorType.API_KEY,
        target_repr=f"API key {prefix!r}",
        after={"key prefix": prefix, "reason": reason, "path": request.path_info[:200]},
    )
    return Problem(401, "The API key is missing, unknown, revoked or expired.", headers=_CHALLENGE)


def authenticate(request: HttpRequest, scope: str) -> ApiKey:
    """The usable key of ``Authorization: Bearer <key>`` holding ``scope``.

    Raises ``Problem``: 401 for no, unknown, revoked or expired key (audited as a failed
    authentication and throttled like sign-ins: 429 once locked out), 403 without the scope,
    429 past the key's rate limit.
    """
    header = request.headers.get("Authorization", "")
    kind, _, key = header.partition(" ")
    key = key.strip()
    if kind.lower() != "bearer" or not key:
        raise Problem(401, "Send the API key as 'Authorization: Bearer <key>'.", headers=_CHALLENGE)
    prefix = key_prefix(key)
    address = audit.client_ip(request)
    lock = FAILED_KEYS.check(prefix, address)
    if lock is not None:
        # Refused before any lookup: a locked-out guesser learns nothing, right key or not.
        FAILED_KEYS.refused(lock, request=request, name=prefix)
        retry = lock.retry_after()
        raise Problem(
            429,
            "Too many failed API key attempts from here; try again later.",
            headers={"Retry-After": str(retry)},
        )
    found = ApiKey.objects.filter(prefix=prefix).first() if len(key) < 200 else None
    if found is None or not found.matches(key):
        raise _fail(request, prefix, "unknown")
    if not found.usable():
        raise _fail(request, prefix, "revoked" if found.revoked else "expired")
    if not found.has_scope(scope):
        raise Problem(403, f"This API key lacks the '{scope}' scope.")
    limit = take(found)
    request.rate_limit = limit
    if limit.remaining < 0:
        raise Problem(
            429,
            "Rate limit of this API key exceeded.",
            headers={**limit._replace(remaining=0).headers(), "Retry-After": str(limit.reset_s)},
        )
    found.touch()
    return found


def take(key: ApiKey, now: float | None = None) -> RateLimit:
    """Count one request of this key in its current window (fixed windows of burst/rate
    seconds holding ``burst`` requests, counted in the Django cache so every worker
    shares them). ``remaining`` below 0 means refuse."""
    conf = settings.UPSTREAM
    burst, rate = conf["API_RATE_BURST"], conf["API_RATE_PER_S"]
    window = max(1, math.ceil(burst / rate))
    now = time.time() if now is None else now
    slot = int(now // window)
    name = f"api:rate:{key.pk}:{slot}"
    cache = caches["default"]
    cache.add(name, 0, window + 1)
    try:
        used = cache.incr(name)
    except ValueError:  # expired between add and incr
        cache.set(name, 1, window + 1)
        used = 1
    reset = max(1, math.ceil((slot + 1) * window - now))
    return RateLimit(burst, burst - used, reset, window)


def require_key(scope: str) -> Callable:
    """Decorate an API view (inside ``problems.endpoint``): ``request.api_key`` is the
    authenticated key; its rate-limit headers are added to the answer."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            request.api_key = authenticate(request, scope)
            response = view(request, *args, **kwargs)
            limit = getattr(request, "rate_limit", None)
            if limit is not None:
                for name, value in limit.headers().items():
                    response.setdefault(name, value)
            return response

        return wrapper

    return decorate
