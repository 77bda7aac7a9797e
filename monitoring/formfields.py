"""Form fields that bound what a person may type: JSON within a size, a depth and finite numbers."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.forms.fields import InvalidJSONInput, JSONString

# Generous for every JSON input Upstream has (headers, assertions, rule parameters), small
# enough that parsing and storing one costs nothing.
MAX_JSON_CHARS = 32_768
MAX_JSON_DEPTH = 20

# What changes the nesting depth, or whether a bracket is inside a string.
_SIGNIFICANT = re.compile(r'[\\"\[\]{}]')


class _NotFinite(Exception):
    pass


def _refuse_constant(name: str) -> float:
    raise _NotFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NotFinite(text)
    return value


def nesting_depth(text: str, stop_above: int | None = None) -> int:
    """How deeply ``text``'s arrays and objects nest, by scanning brackets outside strings.

    Linear and without recursion, so it can run before :func:`json.loads` (whose C scanner
    recurses once per level). Stops counting once the depth exceeds ``stop_above``.
    """
    depth = deepest = 0
    in_string = False
    escaped = -1  # the position a backslash escapes
    for match in _SIGNIFICANT.finditer(text):
        at, char = match.start(), match.group()
        if at == escaped:
            continue
        if in_string:
            if char == "\\":
                escaped = at + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    break
        elif char in "]}":
            depth -= 1
    return deepest


class BoundedJSONField(forms.JSONField):
    """Django's JSON form field, refusing with a form error what would otherwise be a 500.

    Too long or too deeply nested text (``json.loads`` would hit the recursion limit),
    ``NaN``, ``Infinity`` and numbers too large for a float (which the database cannot
    store) or with more digits than Python converts are all a :class:`ValidationError`.
    """

    default_error_messages = {
        "too_long": "At most %(limit)s characters of JSON (this is %(length)s).",
        "too_deep": "JSON nested at most %(limit)s levels deep.",
        "not_finite": "Numbers must be finite: %(number)s is not allowed here.",
        "too_big": "A number in this JSON is too large.",
    }

    def __init__(
        self, *, max_chars: int = MAX_JSON_CHARS, max_depth: int = MAX_JSON_DEPTH, **kwargs: Any
    ) -> None:
        self.max_chars = max_chars
        self.max_depth = max_depth
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> Any:
        if self.disabled or not isinstance(value, str) or value in self.empty_values:
            return super().to_python(value)
        if isinstance(value, JSONString):
            return value
        return self._parse(value)

    def bound_data(self, data: Any, initial: Any) -> Any:
        # Re-rendering an invalid form parses the input again: it must not raise either.
        if self.disabled or not isinstance(data, str):
            return super().bound_data(data, initial)
        try:
            return self._parse(data)
        except ValidationError:
            return InvalidJSONInput(data)

    def _parse(self, text: str) -> Any:
        if len(text) > self.max_chars:
            raise ValidationError(
                self.error_messages["too_long"],
                code="too_long",
                params={"limit": self.max_chars, "length": len(text)},
            )
        if nesting_depth(text, stop_above=self.max_depth) > self.max_depth:
            raise ValidationError(
                self.error_messages["too_deep"], code="too_deep", params={"limit": self.max_depth}
            )
        try:
            converted = json.loads(
                text,
                cls=self.decoder,
                parse_constant=_refuse_constant,
                parse_float=_finite_float,
            )
        except _NotFinite as exc:
            raise ValidationError(
                self.error_messages["not_finite"], code="not_finite", params={"number": exc}
            ) from None
        except json.JSONDecodeError:
            raise ValidationError(
                self.error_messages["invalid"], code="invalid", params={"value": text}
            ) from None
        except (ValueError, RecursionError):
            # An integer past Python's int-from-text digit limit; a RecursionError only if the
            # interpreter's recursion limit is set below the depth limit.
            raise ValidationError(self.error_messages["too_big"], code="too_big") from None
        return JSONString(converted) if isinstance(converted, str) else converted
