"""Pure parsers that turn one HTTP attempt (path, body, headers, exception) into log fields."""

from __future__ import annotations

import json
import math
import re
import ssl
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from html import unescape
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import httpx
from upstream_client.redact import decode_body  # one decoder for the caller and the writer

if TYPE_CHECKING:
    from monitoring.presets import Preset

PATH_CAP = 255
CODE_CAP = 100
MESSAGE_CAP = 500
LINK_CAP = 500
VERSION_CAP = 64
POLICY_CAP = 100
BODY_WINDOW = 64 * 1024
# Header values and paths are cut before any regex sees them, so work stays bounded.
_HEADER_WINDOW = 4096
_PATH_WINDOW = 4096


# --- path templating ----------------------------------------------------------------------

_NUMERIC = re.compile(r"\d+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_EMAIL = re.compile(r"[^@\s/]+@[^@\s/.]+(?:\.[^@\s/.]+)+")
_EXTENSION = re.compile(r"(.+)(\.(?:json|xml|csv|txt|html|pdf|png|jpg))", re.IGNORECASE)
_CASE_SWITCH = re.compile(r"[a-z][A-Z]|[A-Z][a-z]")
# A prefixed id: Stripe's cus_…, ch_…, pi_…, sk_live_…, Anthropic's msg_…, msgbatch_…, req_…,
# OpenAI's file-…: a short lower-case prefix (or a few), then a base62 body.
_PREFIXED = re.compile(r"((?:[a-z]{1,12}[_-]){1,3})([A-Za-z0-9]{10,})")
# The providers' documented id prefixes: with one of these, a body as long as their ids
# (Stripe's shortest is 14) is an id whatever it looks like, since a random base62 body can
# come out all lower case. Other prefixes need an id-shaped body.
_ID_PREFIXES = frozenset(
    {"acct", "card", "ch", "chatcmpl", "cus", "evt", "file", "ft", "ftjob", "msg", "msgbatch"}
    | {"pi", "pk", "pm", "price", "prod", "req", "rk", "seti", "sk", "src", "sub", "tok"}
    | {"toolu", "txn", "whsec"}
)
_ID_BODY_MIN = 14
_ALNUM_ID_MIN = 10
_TOKEN_MIN = 16


def template_path(path: str, explicit: Sequence[str] = ()) -> str:
    """Return the endpoint template of a request path, e.g. ``/v1/users/{id}``."""
    if "://" in path[:16]:
        try:
            path = urlsplit(path[:_PATH_WINDOW]).path
        except ValueError:
            path = path.partition("://")[2].partition("/")[2]
    path = path[:_PATH_WINDOW].partition("?")[0].partition("#")[0] or "/"
    best, best_literal = "", -1
    for template in explicit:
        literal = _explicit_match(template, path)
        if literal > best_literal:
            best, best_literal = template, literal
    if best:
        return best[:PATH_CAP]
    return "/".join(_template_segment(seg) for seg in path.split("/"))[:PATH_CAP]


@lru_cache(maxsize=256)
def _template_regex(template: str) -> tuple[re.Pattern[str], int]:
    """Compile an explicit template; also return how many literal characters it pins."""
    template = template.partition("?")[0]
    pieces = re.split(r"(\{[^{}/]*\})", template.rstrip("/") or "/")
    pattern = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in pieces)
    literal = sum(len(p) for p in pieces if not p.startswith("{"))
    return re.compile(pattern + "/?"), literal


def _explicit_match(template: str, path: str) -> int:
    """Literal length of ``template`` if it matches ``path`` segment by segment, else -1."""
    regex, literal = _template_regex(template)
    return literal if regex.fullmatch(path) else -1


@lru_cache(maxsize=4096)  # pure; a path's words repeat on every call (its ids rarely do)
def _template_segment(segment: str) -> str:
    if not segment:
        return segment
    value = unquote(segment)
    if _NUMERIC.fullmatch(value):
        return "{id}"
    # Each pattern is tried only where its one fixed feature is there (a UUID's length, an
    # address's "@", an extension's "."): a path's ids are all new, so this runs per call.
    if len(value) == 36 and _UUID.fullmatch(value):
        return "{uuid}"
    if "@" in value and _EMAIL.fullmatch(value):
        return "{email}"
    # Twilio-style ``/Messages/SM123….json`` keeps its extension so formats stay apart.
    ext = _EXTENSION.fullmatch(value) if "." in value else None
    if ext:
        stem = _template_segment(ext[1])
        if stem.startswith("{"):
            return stem + ext[2]
    if _looks_like_id(value):
        return "{id}"
    return segment


def _looks_like_id(value: str) -> bool:
    """Whether a segment is an identifier rather than a word: one placeholder, ``{id}``, for
    every shape, so an endpoint whose ids vary in length or style stays one series."""
    if len(value) < _ALNUM_ID_MIN:
        return False
    prefixed = _PREFIXED.fullmatch(value)
    if prefixed:
        body = prefixed[2]
        if _random_alnum(body):
            return True
        first = prefixed[1].split("_", 1)[0].split("-", 1)[0]
        return first in _ID_PREFIXES and len(body) >= _ID_BODY_MIN
    if value.isascii() and value.isalnum():
        return _random_alnum(value)
    # Anything else long (base64url keys, signed ids): a digit gives it away.
    return len(value) >= _TOKEN_MIN and any(c.isdigit() for c in value)


def _random_alnum(value: str) -> bool:
    # Words in paths are letters (camelCase at most); ids mix in digits or flip case at
    # random (a word 10+ long with a digit in it is rare). ``value`` is ASCII letters and
    # digits: it holds a digit exactly when it is not all letters.
    if not value.isalpha():
        return True
    return len(_CASE_SWITCH.findall(value)) >= 4


# --- error payloads -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedError:
    """An error code and message from a response body; empty strings when there is none."""

    code: str = ""
    message: str = ""


_IDENTIFIER = re.compile(r"[A-Za-z0-9_.:/-]{1,100}")
_TAG = re.compile(r"<[^<>]*>")
_XML_CODE = re.compile(r"<(?:\w{1,20}:)?Code>([^<]{1,200})<")
_XML_MESSAGE = re.compile(r"<(?:\w{1,20}:)?Message>([^<]{1,2000})<")


def parse_error(
    body: bytes,
    content_type: str | None,
    scrub: Callable[[str], str] | None = None,
    preset: Preset | None = None,
    status: int | None = None,
    token_age_s: float | None = None,
) -> ParsedError:
    """Pull an error code and message out of a response body; never raises.

    ``scrub`` (e.g. ``Redactor().text``) runs before the caps, so a secret cut by a cap is
    never half-left in the result. With the integration's ``preset``, the provider's own
    error shapes are read first (the generic heuristics below are for everyone else) and
    its diagnoses (an expired token, API access switched off) replace the code;
    ``token_age_s`` (how long the caller has used its bearer token, where known) tells an
    expired token from rejected credentials when the provider answers both alike.
    """
    text = decode_body(body[:BODY_WINDOW], content_type)
    ctype = (content_type or "").lower()
    code = message = ""
    head = text.lstrip()[:1]
    if "json" in ctype or head in ("{", "["):
        try:
            payload = json.loads(text)
        except (ValueError, RecursionError):
            payload = None
        found = preset.read_error(payload) if preset is not None else None
        code, message = found or _from_json(payload, problem="problem+json" in ctype)
    if not code and not message and ("xml" in ctype or head == "<"):
        xml_code, xml_message = _XML_CODE.search(text), _XML_MESSAGE.search(text)
        code = xml_code[1] if xml_code else ""
        message = unescape(xml_message[1]) if xml_message else ""
    if not code and not message:
        if "html" in ctype or "xml" in ctype or head == "<":
            text = unescape(_TAG.sub(" ", text))
        message = _first_line(text)
    if preset is not None:
        code = preset.diagnose(status, code, message, token_age_s)
    scrub = scrub or (lambda s: s)
    return ParsedError(
        code=_one_line(scrub(code))[:CODE_CAP],
        message=_one_line(scrub(message))[:MESSAGE_CAP],
    )


def parse_success_error(
    body: str,
    preset: Preset | None,
    scrub: Callable[[str], str] | None = None,
    status: int | None = None,
    token_age_s: float | None = None,
) -> ParsedError | None:
    """The error a 2xx body carries, for an API that answers some errors with 200 (the
    preset's ``success_errors``), or None for a success; never raises.

    Only the preset's own shapes are read, never the generic heuristics: an ordinary
    ``{"message": "API is working!"}`` must stay a success.
    """
    if preset is None or not preset.success_errors or not body:
        return None
    try:
        payload = json.loads(body[:BODY_WINDOW])
    except (ValueError, RecursionError):
        return None
    found = preset.read_success_error(payload)
    if found is None:
        return None
    code, message = found
    code = preset.diagnose(status, code, message, token_age_s)
    scrub = scrub or (lambda s: s)
    return ParsedError(
        code=_one_line(scrub(code))[:CODE_CAP],
        message=_one_line(scrub(message))[:MESSAGE_CAP],
    )


def _from_json(payload: object, problem: bool) -> tuple[str, str]:
    if isinstance(payload, str):
        return "", payload
    if isinstance(payload, list):
        # Salesforce and friends answer with a bare list of error objects.
        payload = next((item for item in payload[:10] if isinstance(item, dict)), None)
    if not isinstance(payload, dict):
        return "", ""
    error = payload.get("error")
    if problem or ("title" in payload and "type" in payload and error is None):
        kind = _scalar(payload.get("type"))
        code = kind if kind and kind != "about:blank" else _scalar(payload.get("status"))
        return code, _first(payload, "detail", "title")
    if isinstance(error, dict):
        # Google puts the HTTP status number in "code" and the useful name in "status".
        code = _first(error, "code", "type", "status", strings_only=True)
        code = code or _first(error, "code", "type", "status")
        message = _first(error, "message", "error_description", "description", "details")
        if not message:
            message = _from_errors(error.get("errors"))[1]
        return code, message or _first(payload, "message", "error_description")
    if isinstance(error, str) and error.strip():
        description = _first(payload, "error_description", "message", "error_message", "detail")
        if description or _IDENTIFIER.fullmatch(error):
            return error, description
        return _first(payload, "code", "error_code", "errorCode"), error
    sub_code, sub_message = _from_errors(payload.get("errors"))
    fault = payload.get("fault")
    if isinstance(fault, dict):
        detail = fault.get("detail")
        detail_code = _first(detail, "errorcode") if isinstance(detail, dict) else ""
        sub_code = sub_code or detail_code or _first(fault, "faultcode", "code")
        sub_message = sub_message or _first(fault, "faultstring", "message")
    code = _first(payload, "code", "error_code", "errorCode", "__type") or sub_code
    message = _first(
        payload, "message", "Message", "error_message", "errorMessage", "detail", "msg"
    )
    return code, message or sub_message


def _from_errors(errors: object) -> tuple[str, str]:
    if not isinstance(errors, list) or not errors:
        return "", ""
    first = errors[0]
    if isinstance(first, str):
        return "", first
    if not isinstance(first, dict):
        return "", ""
    code = _first(first, "code", "type")
    extensions = first.get("extensions")  # GraphQL
    if not code and isinstance(extensions, dict):
        code = _first(extensions, "code")
    return code, _first(first, "message", "detail", "title", "reason")


def _first(obj: Mapping[str, object], *keys: str, strings_only: bool = False) -> str:
    for key in keys:
        value = obj.get(key)
        if strings_only and not isinstance(value, str):
            continue
        text = _scalar(value)
        if text:
            return text
    return ""


def _scalar(value: object) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return ""
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list) and value:
        # NestJS validation errors: a list of messages.
        return _scalar(value[0]) if isinstance(value[0], str | int | float) else ""
    return ""


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line
    return ""


def _one_line(text: str) -> str:
    return " ".join(text[:BODY_WINDOW].split())


# --- headers ------------------------------------------------------------------------------


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    """Lowercase names (plain dicts are not case-insensitive) and bound each value."""
    return {str(k).lower(): str(v)[:_HEADER_WINDOW] for k, v in headers.items()}


_NUMBER = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,9})?")
_DURATION = re.compile(r"(?:[0-9]{1,9}(?:\.[0-9]{1,9})?(?:ms|h|m|s)){1,4}")
_DURATION_PART = re.compile(r"([0-9]{1,9}(?:\.[0-9]{1,9})?)(ms|h|m|s)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _number(value: str | None) -> float | None:
    """First list member of a header value as a non-negative number, else None."""
    if value is None:
        return None
    if len(value) <= 15 and value.isdigit() and value.isascii():
        return float(value)  # the usual plain integer, which _NUMBER accepts as it is
    value = value.split(",", 1)[0].split(";", 1)[0].strip().strip('"')
    return float(value) if _NUMBER.fullmatch(value) else None


def _integer(value: str | None) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


def _duration(value: str | None) -> float | None:
    """Go-style durations (``1s``, ``6m0s``, ``20ms``) as sent by OpenAI; plain seconds too."""
    if value is None:
        return None
    value = value.strip()
    if _DURATION.fullmatch(value):
        return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(value))
    return _number(value)


def _http_date(value: str | None) -> datetime | None:
    """An HTTP-date (or ISO 8601, which some providers send) as an aware UTC datetime."""
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        parsed = parsedate_to_datetime(value)
    except Exception:  # the stdlib parser raises several unrelated types
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def _from_epoch(seconds: float) -> datetime | None:
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Rate-limit state a response reported; ``reset_at`` is epoch seconds. The request
    budget (``limit``, ``remaining``, ``reset_at``) and the token budget (``token_*``: for
    Anthropic the tightest of its token limits) are kept apart."""

    limit: int | None = None
    remaining: int | None = None
    reset_at: float | None = None
    retry_after_s: float | None = None
    policy: str = ""
    token_limit: int | None = None
    token_remaining: int | None = None
    token_reset_at: float | None = None


_LIMIT_NAMES = ("ratelimit-limit", "x-ratelimit-limit", "x-rate-limit-limit")
_REMAINING_NAMES = ("ratelimit-remaining", "x-ratelimit-remaining", "x-rate-limit-remaining")
_RESET_NAMES = ("ratelimit-reset", "x-ratelimit-reset", "x-rate-limit-reset")
_MAX_COUNTER = 2**31 - 1  # what the log's integer columns hold
_LATEST_RESET = 4_102_444_800  # 2100-01-01


# Anthropic: anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,
# remaining,reset}, the reset an RFC 3339 time; "tokens" is the most restrictive token limit
# in effect, the input/output pair count when it is absent.
_ANTHROPIC = "anthropic-ratelimit-"
_ANTHROPIC_TOKEN_KINDS = ("tokens", "input-tokens", "output-tokens")
# OpenAI: x-ratelimit-{limit,remaining,reset}-{requests,tokens}, the reset a Go duration.
_OPENAI_TOKENS = (
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
)

# Every header name parse_rate_limit reads (the client keeps only the headers the parsers
# read; the recorder skips parsing when none is present).
RATE_LIMIT_HEADERS = frozenset(
    {
        "ratelimit",
        "ratelimit-policy",
        *_LIMIT_NAMES,
        *_REMAINING_NAMES,
        *_RESET_NAMES,
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        *_OPENAI_TOKENS,
        *(
            f"{_ANTHROPIC}{kind}-{part}"
            for kind in ("requests", *_ANTHROPIC_TOKEN_KINDS)
            for part in ("limit", "remaining", "reset")
        ),
        "x-ratelimit-reset-after",
        "retry-after",
        "retry-after-ms",
        "x-ms-retry-after-ms",
    }
)
# The common X-RateLimit-* trio has a fast path; the rest go through the general one.
_TRIO = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")
_OTHER_RATE_NAMES = RATE_LIMIT_HEADERS.difference(_TRIO)


def parse_rate_limit(headers: Mapping[str, str], now: float) -> RateLimit:
    """Read rate-limit and Retry-After headers (IETF drafts and X- variants); never raises."""
    h = _lower(headers)
    if h.keys().isdisjoint(_OTHER_RATE_NAMES):
        # Only the trio (or nothing): what the general reading below comes to then, without
        # its structured-field parsing. This runs for nearly every recorded response.
        limit, remaining = _integer(h.get(_TRIO[0])), _integer(h.get(_TRIO[1]))
        return RateLimit(
            limit=limit if limit is not None and limit <= _MAX_COUNTER else None,
            remaining=remaining if remaining is not None and remaining <= _MAX_COUNTER else None,
            reset_at=_reset_at(_number(h.get(_TRIO[2])), now),
        )
    limit = remaining = None
    reset: float | None = None
    policy = ""

    # IETF draft 7+: ``RateLimit: "default";r=50;t=30`` + ``RateLimit-Policy: "default";q=100``,
    # or the older ``RateLimit: limit=100, remaining=50, reset=30``.
    items = _sf_items(h.get("ratelimit", ""))
    flat = {k: v for name, params in items if not name for k, v in params.items()}
    named = next(((name, params) for name, params in items if name), None)
    # A policy must state its quota: ``"name";q=100`` or, in the older draft, ``100;w=60``.
    policies = [
        (name, params)
        for name, params in _sf_items(h.get("ratelimit-policy", ""))
        if _integer(params.get("q") if "q" in params else name) is not None
    ]
    chosen = None
    if policies:
        wanted = named[0] if named else None
        chosen = next((p for p in policies if p[0] == wanted), policies[0])
        policy = _policy_text(chosen)[:POLICY_CAP]
    if named:
        remaining = _integer(named[1].get("r"))
        reset = _number(named[1].get("t"))
    remaining = remaining if remaining is not None else _integer(flat.get("remaining"))
    reset = reset if reset is not None else _number(flat.get("reset"))
    limit = _integer(flat.get("limit"))
    if limit is None and chosen:
        name, params = chosen
        limit = _integer(params.get("q")) if "q" in params else _integer(name)

    for name in _LIMIT_NAMES:
        limit = limit if limit is not None else _integer(h.get(name))
    for name in _REMAINING_NAMES:
        remaining = remaining if remaining is not None else _integer(h.get(name))
    for name in _RESET_NAMES:
        reset = reset if reset is not None else _number(h.get(name))

    # OpenAI: x-ratelimit-*-requests with Go durations; Discord: x-ratelimit-reset-after.
    limit = limit if limit is not None else _integer(h.get("x-ratelimit-limit-requests"))
    if remaining is None:
        remaining = _integer(h.get("x-ratelimit-remaining-requests"))
    reset = reset if reset is not None else _duration(h.get("x-ratelimit-reset-requests"))
    reset = reset if reset is not None else _number(h.get("x-ratelimit-reset-after"))
    reset_at = _reset_at(reset, now)

    # Anthropic's request budget, its reset an RFC 3339 time.
    if limit is None and remaining is None:
        limit = _integer(h.get(f"{_ANTHROPIC}requests-limit"))
        remaining = _integer(h.get(f"{_ANTHROPIC}requests-remaining"))
        reset_at = _rfc3339(h.get(f"{_ANTHROPIC}requests-reset"))

    tokens = _token_budget(h, now)
    return RateLimit(
        limit=_counter(limit),
        remaining=_counter(remaining),
        reset_at=reset_at,
        retry_after_s=_retry_after(h, now),
        policy=policy,
        token_limit=tokens[0],
        token_remaining=tokens[1],
        token_reset_at=tokens[2],
    )


def _counter(value: int | None) -> int | None:
    return value if value is not None and value <= _MAX_COUNTER else None


def _token_budget(h: Mapping[str, str], now: float) -> tuple[int | None, int | None, float | None]:
    """(limit, remaining, reset_at) of the token budget: OpenAI's, else the tightest of
    Anthropic's (the lowest share left, as ``tighter`` says)."""
    remaining = _counter(_integer(h.get(_OPENAI_TOKENS[1])))
    if remaining is not None:
        limit = _counter(_integer(h.get(_OPENAI_TOKENS[0])))
        return limit, remaining, _reset_at(_duration(h.get(_OPENAI_TOKENS[2])), now)
    best: tuple[int | None, int | None, float | None] = (None, None, None)
    for kind in _ANTHROPIC_TOKEN_KINDS:
        remaining = _counter(_integer(h.get(f"{_ANTHROPIC}{kind}-remaining")))
        if remaining is None:
            continue
        limit = _counter(_integer(h.get(f"{_ANTHROPIC}{kind}-limit")))
        if best[1] is None or tighter((remaining, limit), (best[1], best[0])):
            best = (limit, remaining, _rfc3339(h.get(f"{_ANTHROPIC}{kind}-reset")))
    return best


def tighter(budget: tuple[int, int | None], than: tuple[int, int | None]) -> bool:
    """Whether the (remaining, limit) budget is tighter than the other: a lower share of its
    limit left. A budget of unknown limit ranks after every known share unless it is spent;
    ties go to the fewer left, then the smaller limit."""
    return budget_order(*budget) < budget_order(*than)


def budget_order(remaining: int, limit: int | None) -> tuple[float, int, float]:
    """The sort key of a (remaining, limit) budget, tightest first (see ``tighter``)."""
    if limit:
        return remaining / limit, remaining, limit
    return (0.0 if remaining <= 0 else math.inf), remaining, math.inf


def _rfc3339(value: str | None) -> float | None:
    """An RFC 3339 time (Anthropic's resets) as epoch seconds; None if it is not one."""
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.strip()[:64])
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    at = when.timestamp()
    return at if 0 <= at <= _LATEST_RESET else None


def _sf_items(value: str) -> list[tuple[str, dict[str, str]]]:
    """Loosely parse a structured-field list: ``name;k=v;k=v, name;k=v``.

    An item that is itself ``k=v`` (the older draft) comes back with an empty name.
    """
    items = []
    for raw in value.split(",")[:16]:
        parts = raw.split(";")
        head = parts[0].strip()
        params = {}
        for part in parts[1:] if "=" not in head else parts:
            key, eq, val = part.partition("=")
            if eq:
                params[key.strip().lower()] = val.strip().strip('"')
        name = "" if "=" in head else head.strip('"')
        if name or params:
            items.append((name, params))
    return items


def _policy_text(item: tuple[str, dict[str, str]]) -> str:
    name, params = item
    return ";".join([name, *(f"{k}={v}" for k, v in params.items())]).strip(";")


def _reset_at(value: float | None, now: float) -> float | None:
    if value is None:
        return None
    if value > 10**12:  # epoch milliseconds
        at = value / 1000
    elif value > 10**9:  # epoch seconds; no window is 30 years long
        at = value
    else:
        at = now + value
    # Anything past 2100 is garbage, and would not fit a datetime column anyway.
    return at if 0 <= at <= _LATEST_RESET else None


def _retry_after(h: Mapping[str, str], now: float) -> float | None:
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        millis = _number(h.get(name))
        if millis is not None:
            return millis / 1000
    value = h.get("retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds
    when = _http_date(value)
    if when is None:
        return None
    return max(0.0, when.timestamp() - now) if math.isfinite(now) else None


@dataclass(frozen=True, slots=True)
class Deprecation:
    """Deprecation and sunset announced by a response, as aware UTC datetimes."""

    deprecated: bool = False
    deprecated_at: datetime | None = None
    sunset_at: datetime | None = None
    link: str = ""


_EPOCH_DATE = re.compile(r"@([0-9]{1,12})")
_LINK = re.compile(r"<([^<>]*)>([^<]*)")
_REL = re.compile(r"""\brel\s*=\s*(?:"([^"]*)"|([^\s;,"]+))""", re.IGNORECASE)


def parse_deprecation(headers: Mapping[str, str]) -> Deprecation:
    """Read Deprecation (RFC 9745 and legacy), Sunset (RFC 8594) and their Links; never raises.

    A Sunset alone counts as deprecated: the endpoint is announced to go away.
    """
    h = _lower(headers)
    deprecated, deprecated_at = False, None
    value = h.get("deprecation", "").strip()
    epoch = _EPOCH_DATE.fullmatch(value)
    if epoch:
        deprecated_at = _from_epoch(int(epoch[1]))
        deprecated = deprecated_at is not None
    elif value.lower() in ("true", "?1"):
        deprecated = True
    elif value and value.lower() != "false":
        deprecated_at = _http_date(value)
        deprecated = deprecated_at is not None
    sunset_at = _http_date(h.get("sunset"))
    return Deprecation(
        deprecated=deprecated or sunset_at is not None,
        deprecated_at=deprecated_at,
        sunset_at=sunset_at,
        link=_deprecation_link(h.get("link", "")),
    )


def _deprecation_link(value: str) -> str:
    for match in _LINK.finditer(value):
        rel = _REL.search(match[2])
        rels = (rel[1] or rel[2] or "").lower().split() if rel else []
        url = match[1].strip()
        # Only absolute http(s) links: the dashboard renders this as a link.
        if ("deprecation" in rels or "sunset" in rels) and url.lower().startswith(
            ("https://", "http://")
        ):
            return url[:LINK_CAP]
    return ""


VERSION_HEADERS = (
    "api-version",
    "x-api-version",
    "stripe-version",
    "openai-version",
    "anthropic-version",
    "x-github-api-version-selected",
    "x-github-api-version",
    "x-shopify-api-version",
    "x-ms-version",
    "x-version",
)
DEPRECATION_HEADERS = frozenset({"deprecation", "sunset", "link"})
# Everything the parsers read from a response.
PARSED_HEADERS = RATE_LIMIT_HEADERS | DEPRECATION_HEADERS | frozenset(VERSION_HEADERS)


def parse_api_version(headers: Mapping[str, str]) -> str:
    """The API version a response reports in a well-known header, or ""."""
    h = _lower(headers)
    for name in VERSION_HEADERS:
        value = "".join(c for c in h.get(name, "")[:256] if c.isprintable()).strip()
        if value:
            return value[:VERSION_CAP]
    return ""


# --- outcome classes ----------------------------------------------------------------------

# The values of monitoring.models.Outcome, repeated here so this module stays Django-free.
OK = "ok"
CLIENT_ERROR = "client_error"
SERVER_ERROR = "server_error"
TIMEOUT = "timeout"
CONNECT_ERROR = "connect_error"
TLS_ERROR = "tls_error"
PROTOCOL_ERROR = "protocol_error"
READ_ERROR = "read_error"
OTHER_ERROR = "other_error"

_TLS_WORDS = re.compile(r"\b(?:ssl|tls)\b|certificate", re.IGNORECASE)


def classify_status(status: int) -> str:
    """Outcome class of an HTTP status; codes outside 100-599 are ``other_error``."""
    if 100 <= status < 400:
        return OK
    if 400 <= status < 500:
        return CLIENT_ERROR
    if 500 <= status < 600:
        return SERVER_ERROR
    return OTHER_ERROR


def classify_exception(exc: BaseException) -> str:
    """Outcome class of a transport failure raised by httpx (or the socket layer beneath)."""
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return TIMEOUT
    if isinstance(exc, ssl.SSLError):
        return TLS_ERROR
    if isinstance(exc, httpx.ConnectError):
        return TLS_ERROR if _is_tls_failure(exc) else CONNECT_ERROR
    if isinstance(exc, httpx.ProtocolError):
        return PROTOCOL_ERROR
    if isinstance(exc, httpx.ReadError | httpx.WriteError):
        return READ_ERROR
    if isinstance(exc, ConnectionError):
        return CONNECT_ERROR
    return OTHER_ERROR


def tls_cause(exc: BaseException) -> ssl.SSLError | None:
    """The ``ssl.SSLError`` behind a failure, for the detail it carries; None if there is none."""
    return next((link for link in _chain(exc) if isinstance(link, ssl.SSLError)), None)


def _is_tls_failure(exc: BaseException) -> bool:
    return any(
        isinstance(link, ssl.SSLError) or _TLS_WORDS.search(str(link)[:1000])
        for link in _chain(exc)
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    # httpx wraps httpcore's error, which wraps the ssl.SSLError: walk the whole chain.
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 20:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
