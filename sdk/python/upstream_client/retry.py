"""RetryPolicy: when and how long the capture layer retries (off unless asked for)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to retry.

    Retries ``retry_on`` statuses (only statuses ≥ 400 count) and connect errors /
    timeouts, for idempotent methods; POST and PATCH only when the request carries an
    ``Idempotency-Key`` header. The wait before attempt n+1 is ``backoff * 2**(n-1)``
    capped at ``max_backoff``, drawn uniformly from [0, that] with ``jitter="full"``, and
    at least what Retry-After (or, on a 429, the rate-limit reset) asks for. A retry whose
    wait would push the total past ``max_total_wait`` seconds is not made: the last
    response is returned (or the last exception raised), as the plain library would.

    Never stacks on an SDK that retries by itself: when the request carries an SDK's retry
    marker (``x-stainless-retry-count`` of openai and anthropic, stripe's client headers)
    or the wrapped transport / adapter retries by itself (``max_retries`` > 0), this policy
    does not retry, so a call sends at most what the SDK alone would.
    """

    max_attempts: int = 3
    backoff: float = 0.5
    max_backoff: float = 30.0
    jitter: str | None = "full"
    retry_on: frozenset[int] = frozenset({429, 502, 503, 504})
    max_total_wait: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")
        if self.backoff < 0 or self.max_backoff < 0 or self.max_total_wait < 0:
            raise ValueError("RetryPolicy waits must not be negative")
        if self.jitter not in ("full", None):
            raise ValueError('RetryPolicy.jitter must be "full" or None')
        object.__setattr__(self, "retry_on", frozenset(self.retry_on))

    def backoff_for(self, attempt: int) -> float:
        """The wait before ``attempt + 1`` (attempt counts from 1), before Retry-After."""
        wait = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return random.uniform(0, wait) if self.jitter == "full" else wait

    def status_delay(
        self,
        method: str,
        status: int,
        headers: dict[str, str] | None,
        attempt: int,
        total_wait: float,
        retryable: bool,
    ) -> float | None:
        """The wait before retrying a response, or None not to retry it."""
        if status not in self.retry_on or attempt >= self.max_attempts or not retryable:
            return None
        delay = self.backoff_for(attempt)
        asked = asked_wait(headers or {}, status)
        if asked is not None:
            delay = max(delay, asked)
        if total_wait + delay > self.max_total_wait:
            return None  # waiting less than the provider asked would only fail again
        return delay

    def error_delay(self, attempt: int, total_wait: float, retryable: bool) -> float | None:
        """The wait before retrying a connect error or timeout, or None."""
        if attempt >= self.max_attempts or not retryable:
            return None
        delay = self.backoff_for(attempt)
        return delay if total_wait + delay <= self.max_total_wait else None


def method_retryable(method: str, has_idempotency_key: bool) -> bool:
    return method in IDEMPOTENT_METHODS or (method in ("POST", "PATCH") and has_idempotency_key)


def asked_wait(headers: dict[str, str], status: int) -> float | None:
    """Seconds a response asks to wait: Retry-After (seconds or a date), retry-after-ms,
    or on a 429 the rate-limit reset (seconds from now)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    after = headers.get("retry-after")
    if after:
        try:
            return max(0.0, float(after))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(after).timestamp() - time.time())
            except (TypeError, ValueError, IndexError):
                pass
    if status == 429:
        for name in ("ratelimit-reset", "x-ratelimit-reset-requests", "x-ratelimit-reset"):
            value = headers.get(name)
            if value:
                try:
                    seconds = float(value.rstrip("s"))
                except ValueError:
                    continue
                if seconds > 1e9:  # an epoch, not a delta
                    seconds -= time.time()
                return max(0.0, min(seconds, 3600.0))
    return None
