"""``${NAME}`` references to environment variables: how a stored value names a secret, and which."""

from __future__ import annotations

import ast
import functools
import importlib.util
import logging
import os
import re
from collections.abc import Mapping

from django.conf import ENVIRONMENT_VARIABLE, settings

logger = logging.getLogger(__name__)

# Shell-style names only: a stored value is never evaluated, just substituted.
REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

# Variables meant to be handed out carry this prefix, so nothing else in the worker's
# environment (cloud credentials, another app's keys) can be sent by whoever edits a probe.
SECRET_PREFIX = "UPSTREAM_SECRET_"  # noqa: S105 (a name prefix, not a secret)
ALLOW_VARIABLE = "UPSTREAM_SECRET_ENV_ALLOW"


class ForbiddenReference(ValueError):
    """A value refers to an environment variable that Upstream may not hand out."""

    def __init__(self, names: list[str], message: str) -> None:
        super().__init__(message)
        self.names = names


def names_in(text: str) -> list[str]:
    """The variable names ``text`` refers to, in order, repeats included."""
    return REF.findall(text)


def resolve(text: str, environ: Mapping[str, str]) -> str:
    """``text`` with each reference replaced by its value; an unset name becomes ``""``.

    This is only the substitution: callers that send the result anywhere call :func:`check`
    first, and check :func:`names_in` against ``environ`` if a half-filled value must not go.
    """
    return REF.sub(lambda m: environ.get(m.group(1), ""), text)


def check(text: str) -> None:
    """Raise :class:`ForbiddenReference` unless every variable ``text`` names may be sent.

    The one policy for probes, channels and webhooks alike: a name is allowed if it starts
    with ``UPSTREAM_SECRET_`` (and has more after it) or is listed in
    ``UPSTREAM_SECRET_ENV_ALLOW``, and never if the settings module reads it, whatever the
    allow list says.
    """
    derived = _settings_reads()
    # Without the settings' own list a listed name could be one of them: honour no list then.
    own_names, allow = (derived, _allow_list()) if derived else (settings_variables(), ())
    refused, own = [], []
    for name in dict.fromkeys(names_in(text)):
        if name in own_names:
            own.append(name)
        elif not (
            (name.startswith(SECRET_PREFIX) and len(name) > len(SECRET_PREFIX)) or name in allow
        ):
            refused.append(name)
    reasons = []
    if own:
        reasons.append(
            f"{_refs(own)} {'is a setting' if len(own) == 1 else 'are settings'} "
            f"of Upstream itself, never sent anywhere (even if listed in {ALLOW_VARIABLE})"
        )
    if refused:
        reasons.append(
            f"{_refs(refused)} may not be referenced: only variables named "
            f"{SECRET_PREFIX}… or listed in {ALLOW_VARIABLE} can be"
        )
    if reasons:
        raise ForbiddenReference(own + refused, "; ".join(reasons) + ".")


def _refs(names: list[str]) -> str:
    return ", ".join(f"${{{name}}}" for name in names)


def _allow_list() -> frozenset[str]:
    return frozenset(settings.UPSTREAM.get("SECRET_ENV_ALLOW", ()))


def settings_variables() -> frozenset[str]:
    """Every environment variable the settings module reads: never to be referenced."""
    return _settings_reads() or frozenset({ENVIRONMENT_VARIABLE, ALLOW_VARIABLE})


@functools.cache
def _settings_reads() -> frozenset[str] | None:
    """The names the settings module reads, found in its source; None if it cannot be read.

    Derived rather than listed so that a setting added later is protected without anyone
    remembering to add it here. A read counts if its first argument is a literal name:
    ``env_*("NAME", …)``, ``os.getenv("NAME")``, ``os.environ.get("NAME")`` or
    ``os.environ["NAME"]``.
    """
    # override_settings (and pytest's settings fixture) hide SETTINGS_MODULE; the variable
    # Django itself reads it from does not change.
    module = getattr(settings, "SETTINGS_MODULE", None) or os.environ.get(ENVIRONMENT_VARIABLE)
    try:
        spec = importlib.util.find_spec(module) if module else None
        with open(spec.origin, encoding="utf-8") as source:  # type: ignore[union-attr]
            tree = ast.parse(source.read())
    except (AttributeError, TypeError, ImportError, ValueError, OSError, SyntaxError):
        logger.warning("cannot read the settings module %r; ignoring %s", module, ALLOW_VARIABLE)
        return None
    names = {ENVIRONMENT_VARIABLE, ALLOW_VARIABLE}
    for node in ast.walk(tree):
        argument = None
        if isinstance(node, ast.Call) and node.args and _reads_environment(node.func):
            argument = node.args[0]
        elif isinstance(node, ast.Subscript) and _is_environ(node.value):
            argument = node.slice
        if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
            names.add(argument.value)
    return frozenset(names)


def _is_environ(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ"
    )


def _reads_environment(func: ast.expr) -> bool:
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if isinstance(func, ast.Attribute) and name in {"get", "setdefault", "pop"}:
        return _is_environ(func.value)
    return name.startswith("env_") or name == "getenv"
