"""Caller-side facts read from request and 2xx response bodies: a bulk batch's size and a
scrubbed sample of a small JSON success body (for APIs that answer errors with 200)."""

from __future__ import annotations

import json

from upstream_client.redact import Redactor

BATCH_BODY_MAX = 1024 * 1024
SAMPLE_BODY_MAX = 4 * 1024
# Scrubbing can lengthen a body ("[redacted]" replaces shorter secrets); the cap only stops
# a pathological sample, a 4 KB body normally survives whole and stays parseable.
SAMPLE_CAP = 2 * SAMPLE_BODY_MAX
# Where a batch's items sit in the bodies of the providers we know, in order of preference:
# Paubox's ``{"data": {"messages": [...]}}`` first, then the common top-level names.
_BATCH_KEYS = ("messages", "requests", "data")

_redactor = Redactor()


def _is_batch_path(path: str) -> bool:
    path = path.partition("?")[0].rstrip("/")
    last = path.rpartition("/")[2].lower()
    return "bulk" in last or "batch" in last


def _declares_other_type(content_type: str | None) -> bool:
    """A content type that is given and is not JSON (a form, multipart, text …)."""
    return bool(content_type) and "json" not in content_type.lower()


def batch_items(method: str, path: str, content_type: str | None, body: bytes | None) -> int | None:
    """How many items a bulk/batch POST carries, or None when it is not one we can count.

    Only a POST whose last path segment names a bulk or batch endpoint is read, and only a
    JSON body of at most 1 MB; every other call returns before touching the body.
    """
    try:
        if not isinstance(method, str) or method.upper() != "POST":
            return None
        if not isinstance(path, str) or not _is_batch_path(path):
            return None
        if not isinstance(body, bytes | bytearray | memoryview) or not body:
            return None
        if len(body) > BATCH_BODY_MAX or _declares_other_type(content_type):
            return None
        data = json.loads(bytes(body))
        if isinstance(data, list):
            return len(data)
        if not isinstance(data, dict):
            return None
        nested = data.get("data")
        if isinstance(nested, dict) and isinstance(nested.get("messages"), list):
            return len(nested["messages"])
        for key in _BATCH_KEYS:
            if isinstance(data.get(key), list):
                return len(data[key])
        return None
    except (ValueError, TypeError, RecursionError, MemoryError):
        return None


def success_sample(content_type: str | None, data: bytes) -> str | None:
    """A small JSON success body as scrubbed compact text (the same redactor as failure
    bodies), so Upstream can tell an error answered with 200; None for anything else."""
    try:
        if not isinstance(data, bytes | bytearray | memoryview) or not data:
            return None
        if len(data) > SAMPLE_BODY_MAX:
            return None
        data = bytes(data)
        if _declares_other_type(content_type):
            return None
        # An object or an array; the writer parses the sample, so it is not parsed twice here.
        if data.lstrip()[:1] not in (b"{", b"["):
            return None
        return _redactor.body(data, content_type or "application/json", cap=SAMPLE_CAP)
    except (ValueError, TypeError, RecursionError, MemoryError):
        return None
