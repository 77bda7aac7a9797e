"""Check a probe's response against its configured assertions and say why it failed.

Everything here works on plain values (status code, latency, header mapping, body bytes), so
tests need no network. A failed verdict names a :class:`monitoring.models.FailureReason`, the
value the probe's rows store.

Assertions
----------
An :class:`Assertions` is stored on the probe as a JSON dict (``to_dict`` / ``from_dict``).
Every field is optional; ``status`` defaults to ``"200-399"``. Invalid values raise
:class:`InvalidAssertion` (a ``ValueError``) naming the field, for forms to show.

Status specs: ``"200"``, ``"200-299"``, ``"2xx"``, or a comma-separated list of those
(``"200,201,204"``, ``"2xx,304"``).

Order of evaluation (the first failure wins and is the reported reason):
https, status, latency failed, header, body (contains, then regex), json path, certificate.
If nothing fails but latency is above ``latency_degraded_ms`` the verdict is ok *and* degraded.

Body checks: ``body_contains`` searches the whole body as UTF-8 bytes. ``body_regex`` searches
only the first 256 KB, decoded as UTF-8 with replacement: Python's ``re`` has no timeout, so
bounding the input (and the pattern, at 500 characters) keeps ordinary patterns cheap. It
cannot stop a pattern with nested quantifiers (``(a+)+$``) from backtracking exponentially on
a short input; the probe task's own timeout is the backstop for that. The JSON path check
parses the whole body; the runner should cap what it reads.

JSON path subset
----------------
A path starts at ``$`` and is followed by steps:

- ``.name`` -- an object key made of letters, digits, ``_`` and ``-`` (always a key, never
  an index, so ``$.a.0`` looks up the key ``"0"``);
- ``["any key"]`` -- an object key as a JSON string;
- ``[0]``, ``[-1]`` -- a list index, negative counting from the end.

Then, optionally, one operator (no operator means ``exists``):

- ``exists`` / ``not exists``;
- ``== <json>`` / ``!= <json>`` -- any JSON literal; equality is JSON's, so ``true`` never
  equals ``1``;
- ``>``, ``<``, ``>=``, ``<=`` followed by a JSON number; the value must be a number;
- ``~= "regex"`` -- the value must be a string that the regex matches (``re.search``).

Examples: ``$.status == "ok"``, ``$.data[0].id exists``, ``$.count >= 1``,
``$["rate limit"].remaining > 10``, ``$.items[-1].state != "failed"``, ``$.version ~= "^2\\."``.
"""

from __future__ import annotations

import json
import math
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from monitoring.models import FailureReason

BODY_SCAN_LIMIT = 256 * 1024
MAX_REGEX_LENGTH = 500
MAX_JSON_PATHS = 20
MAX_JSON_PATH_LENGTH = 1000
MAX_BODY_CONTAINS_LENGTH = 1000
DEFAULT_STATUS = "200-399"


class InvalidAssertion(ValueError):
    """A configured assertion is malformed; ``field`` names which one, for form errors."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Verdict:
    ok: bool
    degraded: bool
    reason: FailureReason | None
    message: str


# --- status specs -----------------------------------------------------------------------

_STATUS_PART = re.compile(r"([1-5])xx|(\d{3})(?:\s*-\s*(\d{3}))?", re.IGNORECASE)


def parse_status_spec(spec: str) -> tuple[tuple[int, int], ...]:
    """Turn ``"200-299,304"`` into inclusive ranges; ``ValueError`` if malformed."""
    ranges = []
    for raw in spec.split(","):
        part = raw.strip()
        match = _STATUS_PART.fullmatch(part)
        if not match:
            raise ValueError(f"{part!r} is not a status code, range (200-299) or class (2xx)")
        if match[1]:
            low = high = int(match[1]) * 100
            high += 99
        else:
            low = int(match[2])
            high = int(match[3]) if match[3] else low
        if not (100 <= low <= high <= 599):
            raise ValueError(f"{part!r} must be status codes between 100 and 599, low to high")
        ranges.append((low, high))
    return tuple(ranges)


# --- JSON path ----------------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z0-9_-]+")
_INDEX = re.compile(r"-?\d+")
_WORD_OPS = (("not exists", "not exists"), ("exists", "exists"))
_SYMBOL_OPS = ("==", "!=", ">=", "<=", "~=", ">", "<")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_LITERAL_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


@dataclass(frozen=True)
class JsonPath:
    """A parsed path expression: the steps from ``$``, an operator and its operand."""

    steps: tuple[str | int, ...]
    op: str
    operand: Any = None
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @property
    def path(self) -> str:
        return _render_path(self.steps)


def _render_path(steps: tuple[str | int, ...] | list[str | int]) -> str:
    out = ["$"]
    for step in steps:
        if isinstance(step, int):
            out.append(f"[{step}]")
        elif _NAME.fullmatch(step):
            out.append(f".{step}")
        else:
            out.append(f"[{json.dumps(step)}]")
    return "".join(out)


def _skip_ws(expr: str, pos: int) -> int:
    while pos < len(expr) and expr[pos].isspace():
        pos += 1
    return pos


def parse_json_path(expr: str) -> JsonPath:
    """Parse one expression of the subset above; ``ValueError`` says what and where."""
    if not isinstance(expr, str):
        raise ValueError("a JSON path must be a string")
    if len(expr) > MAX_JSON_PATH_LENGTH:
        raise ValueError(f"a JSON path may be at most {MAX_JSON_PATH_LENGTH} characters")

    def fail(message: str, pos: int) -> ValueError:
        return ValueError(f"{message} at position {pos} in {expr!r}")

    pos = _skip_ws(expr, 0)
    if not expr.startswith("$", pos):
        raise fail("expected '$'", pos)
    pos += 1
    steps: list[str | int] = []
    while pos < len(expr) and expr[pos] in ".[":
        if expr[pos] == ".":
            match = _NAME.match(expr, pos + 1)
            if not match:
                raise fail("expected a key name after '.'", pos + 1)
            steps.append(match[0])
            pos = match.end()
            continue
        pos = _skip_ws(expr, pos + 1)
        if expr.startswith('"', pos):
            try:
                key, pos = _LITERAL_DECODER.raw_decode(expr, pos)
            except json.JSONDecodeError as exc:
                raise fail(f"bad quoted key ({exc.msg})", exc.pos) from None
            steps.append(key)
        elif match := _INDEX.match(expr, pos):
            steps.append(int(match[0]))
            pos = match.end()
        else:
            raise fail("expected a list index or a \"quoted key\" after '['", pos)
        pos = _skip_ws(expr, pos)
        if not expr.startswith("]", pos):
            raise fail("expected ']'", pos)
        pos += 1

    pos = _skip_ws(expr, pos)
    if pos == len(expr):
        return JsonPath(tuple(steps), "exists")
    for text, op in _WORD_OPS:
        end = pos + len(text)
        if expr.startswith(text, pos) and _skip_ws(expr, end) == len(expr):
            return JsonPath(tuple(steps), op)
    op = next((o for o in _SYMBOL_OPS if expr.startswith(o, pos)), None)
    if op is None:
        raise fail("expected an operator (exists, not exists, ==, !=, >, <, >=, <=, ~=)", pos)
    pos = _skip_ws(expr, pos + len(op))
    if pos == len(expr):
        raise fail(f"expected a value after {op!r}", pos)
    try:
        operand, end = _LITERAL_DECODER.raw_decode(expr, pos)
    except json.JSONDecodeError as exc:
        raise fail(f"expected a JSON value after {op!r} ({exc.msg})", exc.pos) from None
    except ValueError as exc:
        raise fail(str(exc), pos) from None
    except RecursionError:
        raise fail("value nested too deeply", pos) from None
    end = _skip_ws(expr, end)
    if end != len(expr):
        raise fail("unexpected text after the value", end)

    pattern = None
    if op in (">", "<", ">=", "<=") and not _is_number(operand):
        raise fail(f"{op!r} needs a number", pos)
    if op == "~=":
        if not isinstance(operand, str):
            raise fail("'~=' needs a regex as a JSON string", pos)
        try:
            pattern = _compile_regex(operand)
        except ValueError as exc:
            raise fail(str(exc), pos) from None
    return JsonPath(tuple(steps), op, operand, pattern)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_equal(a: Any, b: Any) -> bool:
    # Python says True == 1 and 1 == 1.0; JSON says the first is false, the second true.
    if _is_number(a) and _is_number(b):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_json_equal, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _show(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


_MISSING = object()


def _walk(doc: Any, steps: tuple[str | int, ...]) -> tuple[Any, str]:
    """Return the value at ``steps`` or ``_MISSING`` with the reason it is missing."""
    node = doc
    for i, step in enumerate(steps):
        here = _render_path(steps[:i])
        if isinstance(step, int):
            if not isinstance(node, list):
                return _MISSING, f"{here} is not a list"
            if not -len(node) <= step < len(node):
                return _MISSING, f"{here} has no index {step} (length {len(node)})"
        elif not isinstance(node, dict):
            return _MISSING, f"{here} is not an object"
        elif step not in node:
            return _MISSING, f"{here} has no key {json.dumps(step)}"
        node = node[step]
    return node, ""


def evaluate_json_path(expr: str | JsonPath, doc: Any) -> tuple[bool, str]:
    """Check one expression against a parsed JSON document: (passed, short message)."""
    parsed = expr if isinstance(expr, JsonPath) else parse_json_path(expr)
    path, op, operand = parsed.path, parsed.op, parsed.operand
    value, why_missing = _walk(doc, parsed.steps)

    if value is _MISSING:
        if op == "not exists":
            return True, f"{path} does not exist"
        return False, f"{path} not found: {why_missing}"
    if op == "exists":
        return True, f"{path} exists"
    if op == "not exists":
        return False, f"{path} exists (it was {_show(value)}), expected it not to"
    if op == "==":
        if _json_equal(value, operand):
            return True, f"{path} was {_show(value)}"
        return False, f"{path} was {_show(value)}, expected {_show(operand)}"
    if op == "!=":
        if not _json_equal(value, operand):
            return True, f"{path} was {_show(value)}"
        return False, f"{path} was {_show(value)}, expected anything else"
    if op == "~=":
        assert parsed.pattern is not None
        if not isinstance(value, str):
            return False, f"{path} was {_show(value)}, expected a string matching {_show(operand)}"
        if parsed.pattern.search(value[:BODY_SCAN_LIMIT]):
            return True, f"{path} was {_show(value)}"
        return False, f"{path} was {_show(value)}, expected to match {_show(operand)}"
    if not _is_number(value):
        return False, f"{path} was {_show(value)}, expected a number {op} {_show(operand)}"
    holds = {
        ">": value > operand,
        "<": value < operand,
        ">=": value >= operand,
        "<=": value <= operand,
    }[op]
    if holds:
        return True, f"{path} was {_show(value)}"
    return False, f"{path} was {_show(value)}, expected {op} {_show(operand)}"


# --- the assertions themselves ---------------------------------------------------------------


def _compile_regex(pattern: str) -> re.Pattern[str]:
    if not pattern:
        raise ValueError("regex must not be empty")
    if len(pattern) > MAX_REGEX_LENGTH:
        raise ValueError(f"regex may be at most {MAX_REGEX_LENGTH} characters")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regex: {exc}") from None


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


@dataclass(frozen=True)
class HeaderAssertion:
    """A response header that must be present and, if ``regex`` is set, match it."""

    name: str
    regex: str | None = None


def _positive_number(name: str, value: Any, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if not _is_number(value) or not math.isfinite(value):
        raise InvalidAssertion(name, "must be a number")
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidAssertion(name, "must be zero or more" if allow_zero else "must be above 0")


@dataclass(frozen=True)
class Assertions:
    """What must hold for a probe's response to count as up; validated on construction."""

    status: str = DEFAULT_STATUS
    latency_degraded_ms: float | None = None
    latency_failed_ms: float | None = None
    body_contains: str | None = None
    body_regex: str | None = None
    json_path: tuple[str, ...] = ()
    header: HeaderAssertion | None = None
    tls_min_days: float | None = None
    https_only: bool = False

    _status_ranges: tuple[tuple[int, int], ...] = field(init=False, repr=False, compare=False)
    _body_pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _header_pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _json_paths: tuple[JsonPath, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Frozen, so derived values are set through object.__setattr__.
        def derive(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if not isinstance(self.status, str) or not self.status.strip():
            raise InvalidAssertion("status", "must be a status spec such as 200-299 or 2xx")
        try:
            derive("_status_ranges", parse_status_spec(self.status))
        except ValueError as exc:
            raise InvalidAssertion("status", str(exc)) from None

        _positive_number("latency_degraded_ms", self.latency_degraded_ms)
        _positive_number("latency_failed_ms", self.latency_failed_ms)
        if (
            self.latency_degraded_ms is not None
            and self.latency_failed_ms is not None
            and self.latency_failed_ms <= self.latency_degraded_ms
        ):
            raise InvalidAssertion("latency_failed_ms", "must be greater than latency_degraded_ms")

        if self.body_contains is not None:
            if not isinstance(self.body_contains, str) or not self.body_contains:
                raise InvalidAssertion("body_contains", "must be non-empty text")
            if len(self.body_contains) > MAX_BODY_CONTAINS_LENGTH:
                raise InvalidAssertion(
                    "body_contains", f"may be at most {MAX_BODY_CONTAINS_LENGTH} characters"
                )

        derive("_body_pattern", None)
        if self.body_regex is not None:
            if not isinstance(self.body_regex, str):
                raise InvalidAssertion("body_regex", "must be text")
            try:
                derive("_body_pattern", _compile_regex(self.body_regex))
            except ValueError as exc:
                raise InvalidAssertion("body_regex", str(exc)) from None

        if isinstance(self.json_path, str) or not isinstance(self.json_path, list | tuple):
            raise InvalidAssertion("json_path", "must be a list of expressions")
        derive("json_path", tuple(self.json_path))
        if len(self.json_path) > MAX_JSON_PATHS:
            raise InvalidAssertion("json_path", f"at most {MAX_JSON_PATHS} expressions")
        parsed = []
        for i, expr in enumerate(self.json_path):
            try:
                parsed.append(parse_json_path(expr))
            except ValueError as exc:
                raise InvalidAssertion(f"json_path[{i}]", str(exc)) from None
        derive("_json_paths", tuple(parsed))

        derive("_header_pattern", None)
        if self.header is not None:
            if not isinstance(self.header, HeaderAssertion):
                raise InvalidAssertion("header", "must have a name and an optional regex")
            name = self.header.name
            if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
                raise InvalidAssertion("header", f"{name!r} is not a valid header name")
            if self.header.regex is not None:
                if not isinstance(self.header.regex, str):
                    raise InvalidAssertion("header", "regex must be text")
                try:
                    derive("_header_pattern", _compile_regex(self.header.regex))
                except ValueError as exc:
                    raise InvalidAssertion("header", str(exc)) from None

        _positive_number("tls_min_days", self.tls_min_days, allow_zero=True)
        if not isinstance(self.https_only, bool):
            raise InvalidAssertion("https_only", "must be true or false")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Assertions:
        """Build from the probe's JSON dict; missing or null keys take their defaults."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise InvalidAssertion("assertions", "must be an object")
        known = {f for f in cls.__dataclass_fields__ if not f.startswith("_")}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidAssertion(str(unknown[0]), "is not a known assertion")
        values = {k: v for k, v in data.items() if v is not None}

        status = values.get("status", DEFAULT_STATUS)
        if isinstance(status, int) and not isinstance(status, bool):
            status = str(status)  # a bare 200 from a hand-written dict means "200"
        values["status"] = status

        if "json_path" in values and not isinstance(values["json_path"], list | tuple):
            raise InvalidAssertion("json_path", "must be a list of expressions")

        header = values.get("header")
        if header is not None:
            if not isinstance(header, Mapping) or "name" not in header:
                raise InvalidAssertion("header", "must be an object with a name")
            extra = sorted(set(header) - {"name", "regex"})
            if extra:
                raise InvalidAssertion("header", f"unknown key {extra[0]!r}")
            values["header"] = HeaderAssertion(header["name"], header.get("regex"))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form ``from_dict`` reads back; unset fields are left out."""
        out: dict[str, Any] = {"status": self.status}
        for name in (
            "latency_degraded_ms",
            "latency_failed_ms",
            "body_contains",
            "body_regex",
            "tls_min_days",
        ):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.json_path:
            out["json_path"] = list(self.json_path)
        if self.header is not None:
            out["header"] = {"name": self.header.name}
            if self.header.regex is not None:
                out["header"]["regex"] = self.header.regex
        if self.https_only:
            out["https_only"] = True
        return out

    def status_matches(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self._status_ranges)


# --- evaluation -----------------------------------------------------------------------------


def _fail(reason: FailureReason, message: str) -> Verdict:
    return Verdict(ok=False, degraded=False, reason=reason, message=message)


def _ms(value: float) -> str:
    return f"{value:.0f} ms"


def _header_value(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    # Plain dicts are case-sensitive; httpx.Headers is not. Treat both the HTTP way.
    values = [v for k, v in headers.items() if k.lower() == wanted]
    return ", ".join(values) if values else None


def evaluate(
    assertions: Assertions,
    *,
    status: int,
    latency_ms: float,
    headers: Mapping[str, str],
    body: bytes,
    url_scheme: str,
    cert_days_left: float | None,
) -> Verdict:
    """Judge one response; the first failing assertion (order in the module doc) wins.

    ``url_scheme`` is the scheme of the URL finally fetched (after redirects).
    ``cert_days_left`` is None when there is no certificate (http) or the runner could not
    read it; the certificate check is then skipped rather than failed.
    """
    a = assertions
    if a.https_only and url_scheme.lower() != "https":
        return _fail(FailureReason.HTTPS, f"URL scheme is {url_scheme}, https is required")

    if not a.status_matches(status):
        return _fail(FailureReason.STATUS, f"status {status}, expected {a.status}")

    if a.latency_failed_ms is not None and latency_ms > a.latency_failed_ms:
        return _fail(
            FailureReason.LATENCY,
            f"latency {_ms(latency_ms)} above the {_ms(a.latency_failed_ms)} limit",
        )

    if a.header is not None:
        value = _header_value(headers, a.header.name)
        if value is None:
            return _fail(FailureReason.HEADER, f"header {a.header.name} is missing")
        if a._header_pattern is not None and not a._header_pattern.search(value):
            return _fail(
                FailureReason.HEADER,
                f"header {a.header.name} was {_show(value)}, "
                f"expected to match {_show(a.header.regex)}",
            )

    if a.body_contains is not None and a.body_contains.encode() not in body:
        return _fail(FailureReason.BODY, f"body does not contain {_show(a.body_contains)}")
    if a._body_pattern is not None:
        text = body[:BODY_SCAN_LIMIT].decode("utf-8", errors="replace")
        if not a._body_pattern.search(text):
            scope = "body" if len(body) <= BODY_SCAN_LIMIT else "first 256 KB of the body"
            return _fail(FailureReason.BODY, f"{scope} does not match {_show(a.body_regex)}")

    if a._json_paths:
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            return _fail(FailureReason.JSON_PATH, "body is not valid JSON")
        for parsed in a._json_paths:
            passed, message = evaluate_json_path(parsed, doc)
            if not passed:
                return _fail(FailureReason.JSON_PATH, message)

    if (
        a.tls_min_days is not None
        and cert_days_left is not None
        and cert_days_left < a.tls_min_days
    ):
        if cert_days_left < 0:
            when = f"expired {-cert_days_left:.1f} days ago"
        else:
            when = f"expires in {cert_days_left:.1f} days"
        return _fail(
            FailureReason.CERTIFICATE, f"certificate {when} (threshold {a.tls_min_days:g})"
        )

    if a.latency_degraded_ms is not None and latency_ms > a.latency_degraded_ms:
        return Verdict(
            ok=True,
            degraded=True,
            reason=None,
            message=(
                f"latency {_ms(latency_ms)} above the {_ms(a.latency_degraded_ms)} "
                "degraded threshold"
            ),
        )
    return Verdict(ok=True, degraded=False, reason=None, message="")


def cert_days_left(not_after: str | datetime, now: datetime) -> float:
    """Days until a certificate expires (negative once expired).

    ``not_after`` is either ``ssl.getpeercert()["notAfter"]`` ("Jun  1 12:00:00 2027 GMT")
    or a datetime; naive datetimes (``now`` included) are taken as UTC.
    """
    if isinstance(not_after, str):
        expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), tz=UTC)
    else:
        expires = not_after if not_after.tzinfo else not_after.replace(tzinfo=UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return (expires - now).total_seconds() / 86400
