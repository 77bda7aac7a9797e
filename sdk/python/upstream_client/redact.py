"""Scrub secrets out of headers, URLs, text and bodies before anything leaves the process.

Names (header names, query keys, JSON keys, ``key=value`` keys in text) are matched by
substring against a denylist after normalising both sides (lowercase, ``-``, ``_``, ``.``
and spaces removed). Substring matching is deliberate and over-matches: ``key`` also hits
``monkey`` and ``idempotency-key``, ``sig`` hits ``signal``, ``auth`` hits ``author``,
``token`` hits ``max_tokens``. A lost harmless value is cheap; a stored secret is not.
Values are matched by shape instead (typed tokens, JWTs, PEM blocks, long random strings),
never by substring.

Every pattern either starts with a literal or is anchored at the start of its character
run and uses possessive quantifiers, so a scan is linear in the input length.

This module is the one owner of these rules: the SDK applies them on the caller's side
(``redact_query``, ``kept_headers``, ``Redactor.body``) and Upstream's server applies the
same ``Redactor`` again (``monitoring.redaction`` re-exports it).
"""

from __future__ import annotations

import binascii
import json as jsonlib
import re
from base64 import b64decode
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit

REDACTED = "[redacted]"
SCRUB_WINDOW = 64 * 1024
HEADER_VALUE_CAP = 1024
_MAX_JSON_DEPTH = 32

DEFAULT_DENYLIST = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "token",
        "api_key",
        "apikey",
        "key",
        "auth",
        "credential",
        "signature",
        "sig",
        "session",
        "csrf",
        "xsrf",
        "private_key",
        "access_key",
        "awsaccesskeyid",
        "x-amz-signature",
        "x-amz-credential",
        "x-goog-signature",
        "cookie",
        "jwt",
        "bearer",
    }
)

# Dropped even if someone trims the denylist.
ALWAYS_DROPPED_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}
)
# Challenges name a scheme and an error, never a credential, and they explain 401s.
_CHALLENGE_HEADERS = frozenset({"www-authenticate", "proxy-authenticate"})

_CHARSET = re.compile(r"charset\s*=\s*[\"']?([\w.:-]{1,40})", re.IGNORECASE)


def decode_body(data: bytes, content_type: str | None) -> str:
    """Decode a body with its declared charset (UTF-8 otherwise); bad bytes become U+FFFD."""
    charset = "utf-8"
    match = _CHARSET.search(content_type or "")
    if match:
        charset = match[1]
    try:
        text = data.decode(charset, errors="replace")
    except (LookupError, ValueError):
        text = data.decode("utf-8", errors="replace")
    return text.lstrip("\ufeff")


_NAME_NOISE = str.maketrans("", "", "-_. ")


def normalise_name(name: str) -> str:
    """The form names and denylist words are compared in: ``X-Api_Key`` → ``xapikey``."""
    return name.lower().translate(_NAME_NOISE)


# --- value patterns -----------------------------------------------------------------------

_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY[A-Z ]{0,10}-----")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]{0,40}PRIVATE KEY[A-Z ]{0,10}-----")

# Each pattern opens with a literal and its run either excludes part of that literal or is
# taken whole (possessive), so no two attempts rescan the same characters. They are searched
# one by one, not as one alternation, so a match of one cannot swallow the start of another.
_TYPED = tuple(
    re.compile(pattern)
    for pattern in (
        r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]++",  # Stripe secret / restricted keys
        r"whsec_[A-Za-z0-9+/=]++",  # Stripe webhook secrets
        r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_-]{20,}+",  # OpenAI, Anthropic
        r"gh[pousr]_[A-Za-z0-9]{20,}+",  # GitHub tokens
        r"github_pat_[A-Za-z0-9_]{20,}+",
        r"xox[baprs]-[A-Za-z0-9-]{10,}+",  # Slack
        r"(?:AKIA|ASIA)[0-9A-Z]{16}",  # AWS access key ids
        r"AIza[0-9A-Za-z_-]{35}",  # Google API keys
        r"SG\.[A-Za-z0-9_-]{16,}+\.[A-Za-z0-9_-]{16,}+",  # SendGrid
        r"shp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}",  # Shopify
    )
)
_AUTH_SCHEME = re.compile(r"(?i:bearer|basic)\s++([A-Za-z0-9._~+/=-]++)")
# Words that follow "Bearer" in error prose and challenges; everything else is a credential.
_NOT_CREDENTIALS = frozenset(
    {"token", "realm", "error", "scope", "auth", "authentication", "authorization", "scheme"}
)
_URL_USERINFO = re.compile(r"://([^\s/@?#]++)@")
_DOTTED_RUN = re.compile(r"(?<![A-Za-z0-9_.-])[A-Za-z0-9_.-]{20,}+")
_RANDOM_RUN = re.compile(r"(?<![A-Za-z0-9+/_=-])[A-Za-z0-9+/_=-]{32,}+")
_DIGIT = re.compile(r"[0-9]")
_LETTER = re.compile(r"[A-Za-z]")

_PAIR = re.compile(
    r"""(?<![A-Za-z0-9_.-])([A-Za-z0-9_.-]{1,64}+)["']?[ \t]{0,8}[:=][ \t]{0,8}(["']?)"""
)
_QUOTED_VALUE = {
    '"': re.compile(r'(?:[^"\\\r\n]|\\.)*+'),
    "'": re.compile(r"(?:[^'\\\r\n]|\\.)*+"),
}
_BARE_VALUE = re.compile(r"""[^\s"'&,;<>(){}\[\]]*+""")
_SCHEME_CREDENTIAL = re.compile(r"""[ \t]++[^\s"'&,;<>(){}\[\]]++""")
_SCHEME_WORDS = frozenset({"bearer", "basic", "token", "digest", "negotiate", "apikey", "sso-key"})
# Keys that hit the denylist by substring but in free text start prose ("Unauthorized: …").
_PROSE_KEYS = frozenset(
    {"unauthorized", "unauthorised", "unauthenticated", "authentication", "author", "keyword"}
)


class Redactor:
    """Scrubs one integration's data: the default denylist plus that integration's names."""

    def __init__(self, extra: Iterable[str] = ()) -> None:
        words = {normalise_name(w) for w in (*DEFAULT_DENYLIST, *extra)}
        words.discard("")  # an empty word would match every name
        self.words = frozenset(words)
        self._words_re = re.compile("|".join(re.escape(w) for w in sorted(self.words)))

    def is_secret_name(self, name: str) -> bool:
        """Whether a header, query, JSON or ``key=value`` name holds a secret."""
        return self._words_re.search(normalise_name(name)) is not None

    def headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """Lowercased headers without credential-bearing ones; kept values scrubbed and capped."""
        kept = {}
        for name, value in headers.items():
            lowered = str(name).lower()
            if lowered in ALWAYS_DROPPED_HEADERS:
                continue
            if lowered not in _CHALLENGE_HEADERS and self.is_secret_name(lowered):
                continue
            kept[lowered] = self.text(str(value)[:SCRUB_WINDOW])[:HEADER_VALUE_CAP]
        return kept

    def url(self, url: str) -> str:
        """The URL without userinfo and fragment; secret query values become ``[redacted]``.

        Only the first 64 KB of a URL are kept.
        """
        url = url[:SCRUB_WINDOW]
        try:
            parts = urlsplit(url)
        except ValueError:
            return self.text(url.partition("#")[0])
        path = parts.path
        # Whole-path scrubbing would eat ordinary paths as "long random strings", so a path
        # with something to hide is scrubbed segment by segment.
        if self.text(unquote_plus(path)) != unquote_plus(path):
            path = "/".join(self._path_segment(segment) for segment in path.split("/"))
        query = "&".join(self._query_pair(pair) for pair in parts.query.split("&"))
        netloc = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, netloc, path, query if parts.query else "", ""))

    def _path_segment(self, segment: str) -> str:
        plain = unquote_plus(segment)
        return segment if self.text(plain) == plain else REDACTED

    def _query_pair(self, pair: str) -> str:
        key, eq, value = pair.partition("=")
        name = unquote_plus(key)
        if eq and self.is_secret_name(name):
            return f"{key}={REDACTED}"
        scrubbed_name = self.text(name)
        if scrubbed_name != name:
            key = quote(scrubbed_name, safe="[]")
        plain = unquote_plus(value)
        scrubbed = self.text(plain)
        if scrubbed != plain:
            value = quote(scrubbed, safe="[]")
        return f"{key}{eq}{value}"

    def text(self, s: str) -> str:
        """Replace everything in free text that looks like a credential with ``[redacted]``."""
        spans = sorted([*_pem_spans(s), *_shape_spans(s), *self._pair_spans(s)])
        if not spans:
            return s
        out, pos = [], 0
        for start, end in _merge(spans):
            out.append(s[pos:start])
            out.append(REDACTED)
            pos = end
        out.append(s[pos:])
        return "".join(out)

    def _pair_spans(self, s: str) -> Iterator[tuple[int, int]]:
        """Values of ``key=value`` / ``"key": "value"`` pairs whose key is a secret name."""
        covered = 0
        verdicts: dict[str, bool] = {}  # machine output repeats the same few keys
        for match in _PAIR.finditer(s):
            if match.start() < covered:
                continue
            key = match[1]
            if key not in verdicts:
                normalised = normalise_name(key)
                verdicts[key] = normalised not in _PROSE_KEYS and self.is_secret_name(key)
            if not verdicts[key]:
                continue
            start = match.end()
            quote_char = match[2]
            if quote_char:
                end = _QUOTED_VALUE[quote_char].match(s, start).end()
            else:
                end = _BARE_VALUE.match(s, start).end()
                # "Authorization: Bearer abc": the credential is the word after the scheme.
                if s[start:end].lower() in _SCHEME_WORDS:
                    tail = _SCHEME_CREDENTIAL.match(s, end)
                    end = tail.end() if tail else end
            if end > start:
                covered = end
                yield start, end

    def json(self, obj: object) -> object:
        """A copy of decoded JSON with secret-named values replaced and strings scrubbed."""
        return self._json(obj, 0)

    def _json(self, obj: object, depth: int) -> object:
        if depth > _MAX_JSON_DEPTH:
            return REDACTED  # not inspected, so not kept
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            result = {}
            for key, value in obj.items():
                if not isinstance(key, str):
                    result[key] = self._json(value, depth + 1)
                elif self.is_secret_name(key) and value is not None and not isinstance(value, bool):
                    result[self.text(key)] = REDACTED
                else:
                    result[self.text(key)] = self._json(value, depth + 1)
            return result
        if isinstance(obj, list | tuple):
            return [self._json(item, depth + 1) for item in obj]
        return obj

    def body(self, data: bytes, content_type: str | None, cap: int = 2048) -> str:
        """A body as scrubbed text (compact JSON when it parses), at most ``cap`` characters.

        Only the first 64 KB are read; scrubbing happens before the cap so that a secret
        straddling the cut is redacted whole rather than left half-visible.
        """
        text = decode_body(data[: max(SCRUB_WINDOW, cap)], content_type)
        if "json" in (content_type or "").lower() or text.lstrip()[:1] in ("{", "["):
            try:
                parsed = jsonlib.loads(text)
            except (ValueError, RecursionError):
                pass  # truncated or not JSON after all: scrub it as text
            else:
                scrubbed = self.json(parsed)
                return jsonlib.dumps(scrubbed, ensure_ascii=False, separators=(",", ":"))[:cap]
        return self.text(text)[:cap]


_DEFAULT = Redactor()


def is_secret_name(name: str) -> bool:
    """The one secret-name rule: whether a header, query, JSON, form or model field name
    holds a secret under the default denylist (audit masking, probe header checks and every
    ``Redactor`` use it; an integration's extra names come on top, in its ``Redactor``)."""
    return _DEFAULT.is_secret_name(name)


def _pem_spans(s: str) -> Iterator[tuple[int, int]]:
    pos = 0
    while match := _PEM_BEGIN.search(s, pos):
        end = _PEM_END.search(s, match.end())
        if end is None:
            # A truncated body can cut a key in half: everything after BEGIN goes.
            yield match.start(), len(s)
            return
        yield match.start(), end.end()
        pos = end.end()


def _shape_spans(s: str) -> Iterator[tuple[int, int]]:
    for pattern in _TYPED:
        for match in pattern.finditer(s):
            yield match.span()
    for match in _AUTH_SCHEME.finditer(s):
        credential = match[1]
        if credential.partition("=")[0].lower() in _NOT_CREDENTIALS:
            continue
        if match[0][:5].lower() == "basic" and not _is_basic_credential(credential):
            continue  # "basic" is also an English word
        yield match.span(1)
    for match in _URL_USERINFO.finditer(s):
        yield match.span(1)
    for match in _DOTTED_RUN.finditer(s):
        run = match[0]
        jwt_at = run.find("eyJ")  # base64 of '{"', how every JWT header starts
        if jwt_at >= 0 and run.find(".", jwt_at) > 0:
            # A full stop after the token ends the sentence, not the token.
            yield match.start(), match.start() + len(run.rstrip("."))
    for match in _RANDOM_RUN.finditer(s):
        run = match[0]
        if _DIGIT.search(run) and _LETTER.search(run):
            yield match.span()


def _is_basic_credential(value: str) -> bool:
    """Basic credentials are base64 of ``user:password``."""
    try:
        decoded = b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return b":" in decoded


def _merge(spans: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """Union of sorted, possibly overlapping or touching spans."""
    start, end = spans[0]
    for next_start, next_end in spans[1:]:
        if next_start <= end:
            end = max(end, next_end)
        else:
            yield start, end
            start, end = next_start, next_end
    yield start, end


# --- the caller's side: cheap, per attempt -------------------------------------------------

# Response headers a sender keeps: those Upstream's parsers read (rate limits and budgets of
# every provider, Retry-After, Deprecation/Sunset/Link, API version) plus the media type
# and the provider's request id. Rate-limit families are matched by prefix so that a
# provider's new budget header (``anthropic-ratelimit-output-tokens-reset``) is not lost.
KEPT_HEADERS = frozenset(
    {
        "retry-after",
        "retry-after-ms",
        "x-ms-retry-after-ms",
        "ratelimit",
        "ratelimit-policy",
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
        "deprecation",
        "sunset",
        "link",
        "api-version",
        "x-api-version",
        "stripe-version",
        "openai-version",
        "anthropic-version",
        "x-github-api-version-selected",
        "content-type",
        "x-request-id",
        "request-id",
        "x-amzn-requestid",
        "stripe-should-retry",
        "x-should-retry",
    }
)
KEPT_PREFIXES = ("x-ratelimit", "x-rate-limit", "ratelimit-", "anthropic-ratelimit-")
_KEPT_B = frozenset(name.encode() for name in KEPT_HEADERS)
_KEPT_PREFIXES_B = tuple(prefix.encode() for prefix in KEPT_PREFIXES)
_REDACTED_B = REDACTED.encode()


def is_kept_header(name: str) -> bool:
    """Whether a (lower-case) response header name leaves the process."""
    return name in KEPT_HEADERS or name.startswith(KEPT_PREFIXES)


_kept_names: dict[bytes, str | None] = {}


def _kept_name(name: bytes) -> str | None:
    kept = name.decode("latin-1") if name in _KEPT_B or name.startswith(_KEPT_PREFIXES_B) else None
    if len(_kept_names) < 4096:
        _kept_names[name] = kept
    return kept


def kept_headers(pairs: Iterable[tuple[bytes, bytes]]) -> dict[str, str] | None:
    """The kept response headers of (lower-case name, value) byte pairs as a str dict, or
    None; a ``Link`` only when it announces a deprecation (pagination links carry cursors
    and signed tokens), scrubbed. Verdicts are cached per name: this runs on every call."""
    kept = None
    verdicts = _kept_names
    for name, value in pairs:
        key = verdicts.get(name, False)
        if key is False:
            key = _kept_name(name)
        if key is not None:
            if name == b"link":
                lowered = value.lower()
                if b"deprecation" not in lowered and b"sunset" not in lowered:
                    continue
                text = _DEFAULT.text(value.decode("latin-1"))[:HEADER_VALUE_CAP]
            else:
                text = value[:HEADER_VALUE_CAP].decode("latin-1")
            if kept is None:
                kept = {}
            kept[key] = text
    return kept


def kept_triples(triples: Iterable[tuple[bytes, bytes, bytes]]) -> dict[str, str] | None:
    """``kept_headers`` of httpx's (raw name, lower name, value) header triples (the hot
    path: one dict lookup per header once the names are known)."""
    kept = None
    verdict = _kept_names.get
    for _, name, value in triples:
        key = verdict(name, False)
        if key is None:
            continue
        if key is False:
            key = _kept_name(name)
            if key is None:
                continue
        if key == "link":
            lowered = value.lower()
            if b"deprecation" not in lowered and b"sunset" not in lowered:
                continue
            text = _DEFAULT.text(value.decode("latin-1"))[:HEADER_VALUE_CAP]
        elif len(value) > HEADER_VALUE_CAP:
            text = value[:HEADER_VALUE_CAP].decode("latin-1")
        else:
            text = value.decode("latin-1")
        if kept is None:
            kept = {key: text}
        else:
            kept[key] = text
    return kept


def kept_mapping(headers: Mapping[str, str]) -> dict[str, str] | None:
    """``kept_headers`` of a str mapping (requests' response headers)."""
    return kept_headers(
        (str(k).lower().encode("latin-1", "replace"), str(v).encode("latin-1", "replace"))
        for k, v in headers.items()
    )


@lru_cache(maxsize=2048)
def _secret_query_name(key: str) -> bool:
    return _DEFAULT.is_secret_name(unquote_plus(key))


def redact_query(query: str) -> str:
    """A raw query (no "?") with secret-named values ``[redacted]``; the value shapes are
    scrubbed again by Upstream. Verdicts are cached per name, so this costs little."""
    if "=" not in query:
        return query
    pairs = query.split("&")
    changed = False
    for i, pair in enumerate(pairs):
        key, eq, _ = pair.partition("=")
        if eq and _secret_query_name(key):
            pairs[i] = key + "=" + REDACTED
            changed = True
    return "&".join(pairs) if changed else query


def scrub_message(text: str, cap: int = 500) -> str:
    """A transport error's message, scrubbed then capped."""
    return _DEFAULT.text(text[:SCRUB_WINDOW])[:cap]
