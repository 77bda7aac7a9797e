"""Webhook secrets: ``${ENV}`` references or values encrypted with UPSTREAM_SECRETS_KEY.

The one owner of how a WebhookSecret holds its value. Nothing here stores, logs or returns
a secret in clear except ``resolve``, which the receiver calls at verification time. The
UI shows ``fingerprint`` only: eight hex digits of a SHA-256, enough to tell two secrets
apart, too few to confirm a guess offline.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from collections.abc import Mapping
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError

from monitoring import envref
from monitoring.models import WebhookEndpoint, WebhookSecret

__all__ = [
    "KEY_VARIABLE",
    "create",
    "encrypt",
    "fingerprint",
    "live_fingerprint",
    "parse_reference",
    "resolve",
]

logger = logging.getLogger(__name__)

KEY_VARIABLE = "UPSTREAM_SECRETS_KEY"
MIN_KEY_CHARS = 16


def _raw_key() -> str:
    return settings.UPSTREAM.get("SECRETS_KEY") or os.environ.get(KEY_VARIABLE, "")


def _keys(raw: str | None = None) -> list[bytes]:
    """Fernet keys derived from UPSTREAM_SECRETS_KEY: comma-separated, the first encrypts,
    the others still decrypt (so the key itself can be rotated)."""
    raw = _raw_key() if raw is None else raw
    keys = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        if len(part) < MIN_KEY_CHARS:
            raise ValidationError(f"{KEY_VARIABLE} keys must be at least {MIN_KEY_CHARS} long.")
        # Any passphrase works: it is stretched to a Fernet key, never used as typed.
        digest = hashlib.sha256(b"upstream-webhook-secrets\0" + part.encode()).digest()
        keys.append(base64.urlsafe_b64encode(digest))
    return keys


def _fernet(raw: str | None = None):
    from cryptography.fernet import Fernet, MultiFernet

    keys = _keys(raw)
    if not keys:
        raise ValidationError(
            f"Set {KEY_VARIABLE} to store encrypted secrets, or give a ${{NAME}} reference."
        )
    return MultiFernet([Fernet(k) for k in keys])


def encrypt(value: str) -> str:
    """``value`` encrypted with the current key (ValidationError when none is set)."""
    return _fernet().encrypt(value.encode("utf-8", "surrogateescape")).decode("ascii")


def fingerprint(value: str) -> str:
    """What the UI shows of a secret."""
    digest = hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()
    return f"sha256 {digest[:8]}…"


def parse_reference(reference: str) -> str:
    """The variable a ``${NAME}`` reference names, if webhooks may read it.

    The policy is monitoring.envref's (``UPSTREAM_SECRET_…`` or listed names, never one of
    Upstream's own settings); the encryption key is refused even if listed.
    """
    reference = reference.strip()
    names = envref.names_in(reference)
    if len(names) != 1 or reference != f"${{{names[0]}}}":
        raise ValidationError(
            "A secret reference is exactly one ${NAME}, e.g. ${UPSTREAM_SECRET_X}."
        )
    if names[0] == KEY_VARIABLE:
        raise ValidationError(f"${{{KEY_VARIABLE}}} is the encryption key, never a secret.")
    try:
        envref.check(reference)
    except envref.ForbiddenReference as exc:
        raise ValidationError(str(exc)) from None
    return names[0]


def resolve(secret: WebhookSecret, environ: Mapping[str, str] | None = None) -> str | None:
    """The secret in clear, for verifying one delivery; None if it cannot be had now."""
    environ = os.environ if environ is None else environ
    if secret.reference:
        try:
            name = parse_reference(secret.reference)
        except ValidationError:
            logger.warning("webhook secret %s: reference refused by policy", secret.pk)
            return None
        return environ.get(name) or None
    if not secret.encrypted:
        return None
    raw_key = _raw_key()
    known = (secret.encrypted, raw_key)
    if known in _decrypted:
        return _decrypted[known]
    from cryptography.fernet import InvalidToken

    try:
        value = (
            _fernet(raw_key)
            .decrypt(secret.encrypted.encode("ascii"))
            .decode("utf-8", "surrogateescape")
        )
    except (InvalidToken, ValidationError, ValueError):
        logger.warning("webhook secret %s: cannot decrypt with %s", secret.pk, KEY_VARIABLE)
        value = None
    if len(_decrypted) >= _DECRYPTED_MAX:
        _decrypted.clear()
    _decrypted[known] = value
    return value


# Decrypted values by (ciphertext, key setting): a delivery costs no Fernet run (AES and an
# HMAC, ten times the signature check itself). A new value or a new key is a new entry, so
# nothing needs invalidating. Process memory only: never logged, stored or returned elsewhere.
_decrypted: dict[tuple[str, str], str | None] = {}
_DECRYPTED_MAX = 1000


def live_fingerprint(secret: WebhookSecret) -> str:
    """The fingerprint of what the secret resolves to now, or why it resolves to nothing."""
    if secret.reference:
        try:
            name = parse_reference(secret.reference)
        except ValidationError:
            return "refused: not an allowed variable"
        value = os.environ.get(name)
        return fingerprint(value) if value else f"unset: {name}"
    return secret.fingerprint or "unknown"


def create(
    endpoint: WebhookEndpoint,
    *,
    reference: str = "",
    value: str = "",
    not_after: datetime | None = None,
) -> WebhookSecret:
    """A new secret for ``endpoint``: a reference, or a value stored encrypted.

    Raises ValidationError with a message for the user on a bad reference, a missing key,
    or a value the endpoint's scheme cannot use.
    """
    from monitoring.webhooks import schemes

    if bool(reference) == bool(value):
        raise ValidationError("Give either a ${NAME} reference or a secret value.")
    scheme = schemes.get(endpoint.scheme)
    if not scheme.uses_secrets:
        raise ValidationError(f"The {scheme.label} scheme takes no secrets.")
    secret = WebhookSecret(endpoint=endpoint, not_after=not_after)
    if reference:
        name = parse_reference(reference)
        secret.reference = f"${{{name}}}"
        current = os.environ.get(name)
        if current:
            _check_usable(scheme, current)
            secret.fingerprint = fingerprint(current)
    else:
        _check_usable(scheme, value)
        secret.encrypted = encrypt(value)
        secret.fingerprint = fingerprint(value)
    secret.save()
    return secret


def _check_usable(scheme, value: str) -> None:
    problem = scheme.check_secret(value)
    if problem:
        raise ValidationError(f"This secret cannot work with {scheme.label}: {problem}.")
