"""Reading a request body: framing (Content-Length or chunked), size caps, gzip, media types."""

from __future__ import annotations

import zlib

from django.conf import settings
from django.http import HttpRequest

from api.problems import Problem

__all__ = ["gunzip", "media_type", "read_body", "require_type"]

_CHUNK = 64 * 1024


def media_type(request: HttpRequest) -> str:
    return request.META.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()


def require_type(request: HttpRequest, *types: str) -> str:
    """The request's media type if it is one of ``types``; 415 otherwise."""
    found = media_type(request)
    if found not in types:
        raise Problem(
            415,
            f"Content-Type must be {' or '.join(types)}, not {found or 'missing'}.",
            headers={"Accept-Post": ", ".join(types)},
        )
    return found


def _too_large(limit: int, after: str = "") -> Problem:
    return Problem(413, f"The body is over {limit:,} bytes{after}.")


def _read_capped(stream, limit: int) -> bytes:
    raw = bytearray()
    while chunk := stream.read(_CHUNK):
        raw += chunk
        if len(raw) > limit:
            raise _too_large(limit)
    return bytes(raw)


def _raw_body(request: HttpRequest, limit: int) -> bytes:
    meta = request.META
    declared = (meta.get("CONTENT_LENGTH") or "").strip()
    if declared:
        if not declared.isdigit():
            raise Problem(400, f"Content-Length {declared[:20]!r} is not a number.")
        if int(declared) > limit:
            raise _too_large(limit)
        return _read_capped(request, limit)
    if "chunked" not in meta.get("HTTP_TRANSFER_ENCODING", "").lower():
        return b""
    # With no Content-Length Django hands the view an empty stream. A server that decodes
    # chunked framing itself (gunicorn) says so with wsgi.input_terminated: then the raw
    # input ends where the body does, and is safe to read to its end (still capped).
    if not meta.get("wsgi.input_terminated"):
        raise Problem(
            411,
            "This server cannot read chunked bodies; send Content-Length, or run Upstream "
            "under gunicorn or behind a proxy that buffers requests.",
            title="Length required",
        )
    return _read_capped(meta["wsgi.input"], limit)


def gunzip(data: bytes, limit: int) -> bytes:
    """A gzip body expanded: 413 past ``limit`` bytes (a bomb is refused, never expanded in
    full), 400 for a corrupt or truncated stream."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
        if len(out) > limit or inflater.unconsumed_tail:
            raise _too_large(limit, " once decompressed")
        out += inflater.flush()
    except zlib.error as exc:
        raise Problem(400, f"The gzip body is corrupt: {exc}.") from None
    if len(out) > limit:
        raise _too_large(limit, " once decompressed")
    if not inflater.eof:
        raise Problem(400, "The gzip body is truncated.")
    return out


def read_body(request: HttpRequest, limit: int | None = None) -> bytes:
    """The body, gunzipped if ``Content-Encoding: gzip``, whether framed by Content-Length
    or chunked (under a server that decodes chunks; 411 otherwise). 413 past ``limit``
    bytes before and after decompression, 415 for another encoding, 400 for a bad
    Content-Length or a broken gzip stream."""
    limit = limit or settings.UPSTREAM["API_MAX_BODY_BYTES"]
    encoding = request.META.get("HTTP_CONTENT_ENCODING", "").strip().lower()
    if encoding not in ("", "identity", "gzip"):
        raise Problem(
            415, f"Content-Encoding {encoding[:20]!r} is not supported; use gzip or none."
        )
    raw = _raw_body(request, limit)
    return gunzip(raw, limit) if encoding == "gzip" else raw
