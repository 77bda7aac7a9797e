"""The webhook signature schemes, one class each: pure verification over raw body bytes.

A scheme gets the request headers (any mapping answering ``get`` with lower-case names;
Django's ``request.headers`` does), the raw body, the endpoint's settings and the secrets
that may verify now, and returns a ``Verified`` or raises one of three errors:
``Malformed`` (400: a header that cannot be read), ``BadSignature`` (401: missing or not
matching any secret) and ``Expired`` (401: signed, but outside the replay window). Nothing
else may escape: the header parsers are fuzzed for it.

Signatures are compared with ``hmac.compare_digest`` against every secret and every
signature offered, without stopping at the first match, so the time taken says nothing
about which part matched. The signature is checked before the timestamp, so ``Expired``
means a genuine delivery that came late (or was replayed), never a forged one.

Adding a scheme is adding one class to ``SCHEMES``; ``monitoring.checks`` keeps it in step
with ``WebhookScheme``'s choices.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import ClassVar, NamedTuple

__all__ = [
    "SCHEMES",
    "BadSignature",
    "Expired",
    "Malformed",
    "Scheme",
    "Settings",
    "Verified",
    "WebhookError",
    "get",
]

# Ids and timestamps are short by nature; anything longer is not a real header.
MAX_ID = 256
MAX_SIGNATURE_HEADER = 8192
# One signature per active secret is what senders send (two or three during a rotation);
# more is refused rather than checked against every key.
MAX_SIGNATURES = 16
# Epoch seconds: up to 10 digits until the year 2286; a few more tolerated, no more.
_DIGITS = re.compile(r"[0-9]{1,12}")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class WebhookError(Exception):
    """A delivery that is not accepted; ``code`` is the RequestLog error code."""

    code: ClassVar[str] = ""
    status: ClassVar[int] = 400


class Malformed(WebhookError):
    code = "malformed"
    status = 400


class BadSignature(WebhookError):
    code = "bad_signature"
    status = 401


class Expired(WebhookError):
    code = "expired"
    status = 401


class Settings(NamedTuple):
    """The endpoint's verification settings (a WebhookEndpoint's columns, no database)."""

    replay_window_s: int = 300
    header_name: str = ""
    signature_encoding: str = "hex"
    timestamp_header: str = ""


class Verified(NamedTuple):
    """What a verified delivery told us besides its body."""

    #: The provider's message / delivery id ("" when the scheme has none in headers).
    delivery_id: str = ""
    #: When the provider signed it (epoch seconds), where the scheme carries one.
    timestamp: int | None = None
    #: The event type, when the scheme sends it in a header (GitHub).
    event_type: str = ""


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    return value.strip() if isinstance(value, str) else ""


def _ascii(value: str, what: str, limit: int = MAX_ID) -> str:
    if len(value) > limit or not value.isascii() or not value.isprintable():
        raise Malformed(f"{what} is not a printable ASCII value of at most {limit} characters")
    return value


def _timestamp(value: str, what: str) -> int:
    if not _DIGITS.fullmatch(value):
        raise Malformed(f"{what} must be whole epoch seconds")
    return int(value)


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise Malformed(f"{what} is not valid base64") from None


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, "sha256")  # one call into OpenSSL, no HMAC object


def _text_key(secret: str) -> bytes:
    # Secrets read from the environment may carry surrogate escapes of undecodable bytes.
    return secret.encode("utf-8", "surrogateescape")


def _any_equal(expected: Iterable[bytes], offered: Sequence[bytes]) -> bool:
    """True if any offered signature equals any expected one, comparing every pair."""
    found = False
    for want in expected:
        for got in offered:
            found |= hmac.compare_digest(want, got)
    return found


def _window(timestamp: int, now: float, window: int, *, future: bool) -> None:
    age = now - timestamp
    if age > window:
        raise Expired(
            f"The delivery was signed {int(age)} s ago, outside the {window} s replay window."
        )
    if future and -age > window:
        raise Expired(
            f"The delivery is signed {int(-age)} s in the future, outside the {window} s "
            "replay window (check the sender's clock)."
        )


class Scheme:
    """One way of signing deliveries. Subclasses set ``key`` and implement ``verify``."""

    key: ClassVar[str]
    label: ClassVar[str]
    #: False for a scheme that trusts the secret URL alone.
    uses_secrets: ClassVar[bool] = True
    #: Where the delivery id comes from when not in a header: the JSON body's "id".
    id_in_body: ClassVar[bool] = True
    #: The scheme's settings a user must fill in (validated by ``check_settings``).
    needs: ClassVar[tuple[str, ...]] = ()

    def verify(
        self,
        headers: Mapping[str, str],
        body: bytes,
        secrets: Sequence[str],
        settings: Settings,
        now: float,
    ) -> Verified:
        raise NotImplementedError

    def check_secret(self, secret: str) -> str | None:
        """Why ``secret`` cannot work with this scheme, or None."""
        return None if secret else "the secret is empty"

    def check_settings(self, settings: Settings) -> list[str]:
        """Problems with an endpoint's settings for this scheme (empty when fine)."""
        return [
            f"{name.replace('_', ' ')} is required"
            for name in self.needs
            if not getattr(settings, name)
        ]


# --- Standard Webhooks and Svix ------------------------------------------------------------


class StandardWebhooks(Scheme):
    """Standard Webhooks: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``.

    The signed content is ``{id}.{timestamp}.{body}``. ``webhook-signature`` is a
    space-separated list of ``version,base64`` entries: ``v1`` is HMAC-SHA256 with a
    ``whsec_`` secret (base64 key bytes), ``v1a`` ed25519 checked with a ``whpk_`` public
    key. Unknown versions are skipped, as the specification asks. The timestamp must be
    within the replay window in both directions.
    """

    key = "standard"
    label = "Standard Webhooks"
    prefix: ClassVar[str] = "webhook-"
    id_in_body = False

    def verify(self, headers, body, secrets, settings, now):
        msg_id = _header(headers, f"{self.prefix}id")
        raw_ts = _header(headers, f"{self.prefix}timestamp")
        raw_sig = _header(headers, f"{self.prefix}signature")
        if not raw_sig:
            raise BadSignature(f"The {self.prefix}signature header is missing.")
        if not msg_id or not raw_ts:
            raise Malformed(f"{self.prefix}id and {self.prefix}timestamp are required.")
        _ascii(msg_id, f"{self.prefix}id")
        timestamp = _timestamp(raw_ts, f"{self.prefix}timestamp")
        _ascii(raw_sig, f"{self.prefix}signature", MAX_SIGNATURE_HEADER)
        symmetric: list[bytes] = []
        asymmetric: list[bytes] = []
        entries = raw_sig.split()
        if len(entries) > MAX_SIGNATURES:
            raise Malformed(f"More than {MAX_SIGNATURES} signatures in {self.prefix}signature.")
        for entry in entries:
            version, comma, value = entry.partition(",")
            if not comma:
                raise Malformed(f"{self.prefix}signature entries are 'version,signature'.")
            if version == "v1":
                symmetric.append(_b64(value, f"a {self.prefix}signature"))
            elif version == "v1a":
                asymmetric.append(_b64(value, f"a {self.prefix}signature"))
        if not symmetric and not asymmetric:
            raise BadSignature(f"No v1 or v1a signature in {self.prefix}signature.")
        signed = f"{msg_id}.{timestamp}.".encode() + body
        hmac_keys, public_keys = [], []
        for secret in secrets:
            if secret.startswith("whpk_"):
                public_keys.append(secret)
            else:
                key = _whsec_key(secret)
                if key:
                    hmac_keys.append(key)
        ok = bool(symmetric) and _any_equal((_hmac(k, signed) for k in hmac_keys), symmetric)
        if asymmetric and public_keys:
            ok |= _ed25519_any(public_keys, asymmetric, signed)
        if not ok:
            raise BadSignature("No signature matches any of the endpoint's secrets.")
        _window(timestamp, now, settings.replay_window_s, future=True)
        return Verified(msg_id, timestamp)

    def check_secret(self, secret):
        if secret.startswith("whpk_"):
            if _ed25519 is None:
                return "v1a (whpk_) keys need the cryptography package"
            raw = _b64_or_none(secret[5:])
            return None if raw is not None and len(raw) == 32 else "a whpk_ key is 32 bytes"
        if not _whsec_key(secret):
            return "expected whsec_ followed by base64 key bytes (or a whpk_ public key)"
        return None


class Svix(StandardWebhooks):
    """Svix: Standard Webhooks with ``svix-`` header names."""

    key = "svix"
    label = "Svix"
    prefix = "svix-"


def _b64_or_none(value: str) -> bytes | None:
    try:
        return base64.b64decode(value.encode("ascii") + b"==")
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None


def _whsec_key(secret: str) -> bytes | None:
    """The HMAC key of a ``whsec_`` secret (bare base64 accepted, as the reference library)."""
    key = _b64_or_none(secret.removeprefix("whsec_"))
    return key or None


try:  # ed25519 for v1a: the cryptography package, when installed.
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ed25519 as _ed25519
except ImportError:  # pragma: no cover - cryptography is a dependency of the project
    _ed25519 = None


def _ed25519_any(public_keys: Sequence[str], signatures: Sequence[bytes], signed: bytes) -> bool:
    if _ed25519 is None:
        return False
    found = False
    for text in public_keys:
        raw = _b64_or_none(text[5:])
        if raw is None or len(raw) != 32:
            continue
        try:
            key = _ed25519.Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            continue
        for signature in signatures:
            try:
                key.verify(signature, signed)
                found = True
            except (InvalidSignature, ValueError):
                pass
    return found


# --- Stripe ----------------------------------------------------------------------------------


class Stripe(Scheme):
    """Stripe: ``Stripe-Signature: t=…,v1=…[,v1=…]`` over ``{t}.{body}``; any v1 may match.

    The secret (``whsec_…``) is used as text, as Stripe does. Only the past is bounded: a
    delivery signed more than the window ago is refused.
    """

    key = "stripe"
    label = "Stripe"

    def verify(self, headers, body, secrets, settings, now):
        raw = _header(headers, "stripe-signature")
        if not raw:
            raise BadSignature("The Stripe-Signature header is missing.")
        _ascii(raw, "Stripe-Signature", MAX_SIGNATURE_HEADER)
        timestamp = None
        offered = []
        items = raw.split(",")
        if len(items) > MAX_SIGNATURES + 2:
            raise Malformed(f"More than {MAX_SIGNATURES} signatures in Stripe-Signature.")
        for item in items:
            name, equals, value = item.strip().partition("=")
            if not equals:
                raise Malformed("Stripe-Signature items are 'name=value'.")
            if name == "t":
                if timestamp is not None:
                    raise Malformed("Stripe-Signature has more than one t=.")
                timestamp = _timestamp(value, "Stripe-Signature t=")
            elif name == "v1":
                if not _HEX64.fullmatch(value):
                    raise Malformed("A Stripe-Signature v1= is 64 hex digits.")
                offered.append(bytes.fromhex(value))
        if timestamp is None:
            raise Malformed("Stripe-Signature has no t=.")
        if not offered:
            raise BadSignature("Stripe-Signature has no v1 signature.")
        signed = f"{timestamp}.".encode() + body
        if not _any_equal((_hmac(_text_key(s), signed) for s in secrets), offered):
            raise BadSignature("No v1 signature matches any of the endpoint's secrets.")
        _window(timestamp, now, settings.replay_window_s, future=False)
        return Verified("", timestamp)


# --- GitHub ----------------------------------------------------------------------------------


class GitHub(Scheme):
    """GitHub: ``X-Hub-Signature-256: sha256=<hex>`` over the body; no timestamp, so no replay
    window: redeliveries are caught by ``X-GitHub-Delivery``."""

    key = "github"
    label = "GitHub"
    id_in_body = False

    def verify(self, headers, body, secrets, settings, now):
        raw = _header(headers, "x-hub-signature-256")
        if not raw:
            raise BadSignature("The X-Hub-Signature-256 header is missing.")
        algorithm, equals, value = raw.partition("=")
        if algorithm != "sha256" or not equals or not _HEX64.fullmatch(value):
            raise Malformed("X-Hub-Signature-256 must be sha256= and 64 hex digits.")
        delivery = _ascii(_header(headers, "x-github-delivery"), "X-GitHub-Delivery")
        event = _ascii(_header(headers, "x-github-event"), "X-GitHub-Event", 100)
        if not _any_equal((_hmac(_text_key(s), body) for s in secrets), [bytes.fromhex(value)]):
            raise BadSignature("The signature matches none of the endpoint's secrets.")
        return Verified(delivery, None, event)


# --- generic HMAC-SHA256 ---------------------------------------------------------------------


class HmacSha256(Scheme):
    """Generic HMAC-SHA256 of the body in a named header, hex or base64 (an optional
    ``sha256=`` prefix is allowed). With a timestamp header the signed content is
    ``{timestamp}.{body}`` and the window applies both ways."""

    key = "hmac_sha256"
    label = "Generic HMAC-SHA256"
    needs = ("header_name",)

    def verify(self, headers, body, secrets, settings, now):
        if not settings.header_name:
            raise BadSignature("The endpoint has no signature header configured.")
        raw = _header(headers, settings.header_name.lower())
        if not raw:
            raise BadSignature(f"The {settings.header_name} header is missing.")
        _ascii(raw, settings.header_name, MAX_SIGNATURE_HEADER)
        value = raw.removeprefix("sha256=")
        if settings.signature_encoding == "base64":
            offered = _b64(value, settings.header_name)
        else:
            if not _HEX64.fullmatch(value):
                raise Malformed(f"{settings.header_name} must be 64 hex digits.")
            offered = bytes.fromhex(value)
        timestamp = None
        signed = body
        if settings.timestamp_header:
            raw_ts = _header(headers, settings.timestamp_header.lower())
            if not raw_ts:
                raise Malformed(f"The {settings.timestamp_header} header is missing.")
            timestamp = _timestamp(raw_ts, settings.timestamp_header)
            signed = f"{timestamp}.".encode() + body
        if not _any_equal((_hmac(_text_key(s), signed) for s in secrets), [offered]):
            raise BadSignature("The signature matches none of the endpoint's secrets.")
        if timestamp is not None:
            _window(timestamp, now, settings.replay_window_s, future=True)
        return Verified("", timestamp)

    def check_settings(self, settings):
        problems = super().check_settings(settings)
        if settings.signature_encoding not in ("hex", "base64"):
            problems.append("signature encoding must be hex or base64")
        return problems


# --- none ------------------------------------------------------------------------------------


class NoSignature(Scheme):
    """No signature: the unguessable URL is the only secret (e.g. Paubox)."""

    key = "none"
    label = "None (secret URL only)"
    uses_secrets = False

    def verify(self, headers, body, secrets, settings, now):
        return Verified()


SCHEMES: dict[str, Scheme] = {
    cls.key: cls() for cls in (StandardWebhooks, Svix, Stripe, GitHub, HmacSha256, NoSignature)
}


def get(key: str) -> Scheme:
    """The scheme registered as ``key`` (KeyError if none)."""
    return SCHEMES[key]
