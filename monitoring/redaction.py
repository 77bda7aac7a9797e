"""Scrub secrets out of headers, URLs, text and bodies: the SDK's rules, applied again here.

The rules have one owner, ``upstream_client.redact`` (the SDK applies them on the caller's
side before anything leaves a process); Upstream's server uses the same ``Redactor`` on
every source, with each integration's extra names.
"""

from __future__ import annotations

from upstream_client.redact import (
    ALWAYS_DROPPED_HEADERS,
    DEFAULT_DENYLIST,
    HEADER_VALUE_CAP,
    REDACTED,
    SCRUB_WINDOW,
    Redactor,
    is_secret_name,
    normalise_name,
)

__all__ = [
    "ALWAYS_DROPPED_HEADERS",
    "DEFAULT_DENYLIST",
    "HEADER_VALUE_CAP",
    "REDACTED",
    "SCRUB_WINDOW",
    "Redactor",
    "is_secret_name",
    "normalise_name",
]
