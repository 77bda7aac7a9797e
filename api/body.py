"""Reading a request body: size cap, gzip with a decompressed-size cap, content types."""

from __future__ import annotations

import zlib

from django.conf import settings
from django.http import HttpRequest

from api.problems import Problem

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


def read_body(request: HttpRequest, limit: int | None = None) -> bytes:
    """The body, gunzipped if ``Content-Encoding: gzip``; 413 past ``limit`` bytes (before
    and after decompression: a gzip bomb is refused, never expanded in full), 415 for
    another encoding, 400 for a broken gzip stream."""
    limit = limit or settings.UPSTREAM["API_MAX_BODY_BYTES"]
    declared = request.META.get("CONTENT_LENGTH") or ""
    if declared.isdigit() and int(declared) > limit:
        raise Problem(413, f"The body is over {limit:,} bytes.")
    raw = bytearray()
    while True:
        chunk = request.read(_CHUNK)
        if not chunk:
            break
        raw += chunk
        if len(raw) > limit:
            raise Problem(413, f"The body is over {limit:,} bytes.")
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return bytes(raw)
    if encoding != "gzip":
        raise Problem(415, f"Content-Encoding {encoding!r} is not supported; use gzip or none.")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(bytes(raw), limit + 1)
        if len(data) > limit or inflater.unconsumed_tail:
            raise Problem(413, f"The body is over {limit:,} bytes once decompressed.")
        data += inflater.flush()
    except zlib.error as exc:
        raise Problem(400, f"The gzip body is corrupt: {exc}.") from None
    if len(data) > limit:
        raise Problem(413, f"The body is over {limit:,} bytes once decompressed.")
    if not inflater.eof:
        raise Problem(400, "The gzip body is truncated.")
    return data
