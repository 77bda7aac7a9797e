"""POST /hooks/<token>/: receive a provider's webhook, verify it, answer fast, queue the attempt."""

from __future__ import annotations

import logging
import re
import time
from typing import NamedTuple

from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from api.problems import Problem, endpoint, json_response, problem
from monitoring.models import WebhookEndpoint, WebhookSecret
from monitoring.webhooks import dedupe, record, schemes
from monitoring.webhooks import secrets as hook_secrets

logger = logging.getLogger(__name__)

# Tokens are made by monitoring.models.webhooks.new_token (43 URL-safe characters); anything
# else is answered 404 without a query.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,64}")
DEFAULT_MAX_BODY = 1024 * 1024
_CHUNK = 64 * 1024


class _TooLarge(Exception):
    def __init__(self, size: int) -> None:
        self.size = min(size, 2**31 - 1)  # what the row's size column holds


def max_body_bytes() -> int:
    return int(settings.UPSTREAM.get("WEBHOOK_MAX_BODY_BYTES", DEFAULT_MAX_BODY))


class _Hook(NamedTuple):
    endpoint: WebhookEndpoint
    secrets: list[WebhookSecret]
    loaded: float
    scheme: schemes.Scheme
    #: The endpoint's verification settings, built once per load rather than per delivery.
    settings: schemes.Settings
    #: The host its deliveries' rows carry (the integration's base URL's).
    host: str


# Endpoints with their secrets, per process, by token: a delivery costs no query to find
# its endpoint. Saves in this process drop the entry at once (signals below); another
# process's edits (the admin on another worker) are seen within CACHE_S.
CACHE_S = 10.0
_CACHE_MAX = 1000
_cache: dict[str, _Hook] = {}


def _find(token: str) -> _Hook | None:
    if not _TOKEN.fullmatch(token):
        return None
    now = time.monotonic()
    hook = _cache.get(token)
    if hook is not None and now - hook.loaded < CACHE_S:
        return hook
    endpoint = (
        WebhookEndpoint.objects.select_related("integration")
        .filter(token=token, active=True)
        .order_by()
        .first()
    )
    if endpoint is None:
        _cache.pop(token, None)
        return None
    if len(_cache) >= _CACHE_MAX:
        _cache.clear()
    hook = _cache[token] = _Hook(
        endpoint,
        list(WebhookSecret.objects.filter(endpoint=endpoint).order_by("-id")),
        now,
        schemes.get(endpoint.scheme),
        schemes.Settings(
            replay_window_s=endpoint.replay_window_s,
            header_name=endpoint.header_name,
            signature_encoding=endpoint.signature_encoding,
            timestamp_header=endpoint.timestamp_header,
        ),
        record.host_of(endpoint.integration.base_url),
    )
    return hook


@receiver([post_save, post_delete], sender=WebhookEndpoint)
@receiver([post_save, post_delete], sender=WebhookSecret)
def _forget(sender, instance, **kwargs) -> None:
    _cache.clear()  # rare (configuration edits): simpler than finding the token


def _read(request: HttpRequest, limit: int) -> bytes:
    """The raw body as sent (signatures cover these bytes: no decoding of any kind)."""
    declared = request.META.get("CONTENT_LENGTH") or ""
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge(int(declared))
    raw = bytearray()
    while chunk := request.read(_CHUNK):
        raw += chunk
        if len(raw) > limit:
            raise _TooLarge(len(raw))
    return bytes(raw)


class _Headers:
    """The request's headers by lower-case name, read from ``META`` when asked: what the
    schemes need of ``request.headers`` without first parsing every header of the request
    into one (which cost as much as verifying the signature)."""

    __slots__ = ("_meta",)

    def __init__(self, meta: dict) -> None:
        self._meta = meta

    def get(self, name: str, default: str | None = None) -> str | None:
        key = name.upper().replace("-", "_")  # as request.headers: "_" is taken for "-"
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        return self._meta.get(key, default)


_warned: dict[int, float] = {}


def _warn_no_secret(hook: WebhookEndpoint) -> None:
    # Every delivery will fail until someone fixes this: say so, at most once a minute.
    now = time.monotonic()
    if now - _warned.get(hook.pk, -60.0) >= 60.0:
        _warned[hook.pk] = now
        logger.warning(
            "webhook endpoint %s (%s) has no usable secret: every delivery fails verification "
            "(unset variable, refused reference, or UPSTREAM_SECRETS_KEY changed)",
            hook.pk,
            hook,
        )


def _accepted() -> HttpResponse:
    # The answer to nearly every delivery, made without json.dumps: json_response's body.
    response = HttpResponse(_ACCEPTED, status=202, content_type="application/json")
    response["Cache-Control"] = "no-store"
    return response


_ACCEPTED = b'{"status": "accepted"}'


@endpoint("POST")
def receive(request: HttpRequest, token: str) -> HttpResponse:
    received = time.time()
    found = _find(token)
    if found is None:
        raise Problem(404, "No webhook endpoint has this address.")
    hook = found.endpoint
    scheme = found.scheme
    integration_id = hook.integration_id

    def note(status: int, code: str = "", size: int = 0, **seen) -> None:
        record.record(
            record.Delivery(
                integration_id=integration_id,
                host=found.host,
                scheme=request.scheme or "https",
                received=received,
                status=status,
                error_code=code,
                event_type=seen.get("event_type", ""),
                delivery_id=seen.get("delivery_id", ""),
                timestamp=seen.get("timestamp"),
                size=size,
            )
        )

    limit = max_body_bytes()
    try:
        body = _read(request, limit)
    except _TooLarge as exc:
        note(413, "too_large", exc.size)
        return problem(413, f"The body is over {limit:,} bytes.", code="too_large")

    secrets = []
    if scheme.uses_secrets:
        now = timezone.now()
        for secret in found.secrets:
            if secret.is_active(now):
                value = hook_secrets.resolve(secret)
                if value:
                    secrets.append(value)
        if not secrets:
            _warn_no_secret(hook)
    try:
        verified = scheme.verify(_Headers(request.META), body, secrets, found.settings, received)
    except schemes.WebhookError as exc:
        note(exc.status, exc.code, len(body))
        return problem(exc.status, str(exc), code=exc.code)

    body_id, body_type = record.event_of(body)
    delivery_id = verified.delivery_id or (str(body_id) if scheme.id_in_body else "")
    event_type = verified.event_type or body_type
    seen = {"event_type": event_type, "delivery_id": delivery_id, "timestamp": verified.timestamp}
    if delivery_id and not dedupe.first_time(hook.pk, delivery_id, hook.replay_window_s):
        note(200, "duplicate", len(body), **seen)
        return json_response({"status": "duplicate"}, status=200)

    note(202, "", len(body), **seen)
    record.touch(hook, received)
    if hook.sample_bodies:
        record.keep_sample(hook, event_type, body, request.META.get("CONTENT_TYPE", ""))
    return _accepted()
