"""Alert channels: one class per kind (its settings, its message), routing and bounded delivery.

The evaluator only writes Delivery rows. `deliver_due()` — called by the e-mail sender's
every-minute run and its post-commit task (monitoring.alerts.notify.send_due) — claims the
due rows, builds each request here, sends them all at once from a small thread pool (HTTP
only: the database is touched from the calling thread), each bounded by a timeout, so one
hanging or failing receiver never delays another. Failures retry with the e-mails' backoff;
a channel that keeps failing shows a warning and e-mails the Admins once.

Secrets (Slack and Teams URLs, signing secrets, routing keys, tokens) are settings holding
``${ENV}`` references, checked by `monitoring.envref.check` and resolved only when sending.
The e-mail kind has no request: its addresses join the alert's e-mail recipients, so it
keeps notify's digests and retries.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import secrets
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ClassVar

import httpx
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import F
from django.template import Context, Engine, TemplateSyntaxError
from django.utils import timezone

from monitoring import envref
from monitoring.models import (
    Alert,
    AlertState,
    Channel,
    ChannelKind,
    Delivery,
    DeliveryStatus,
    Route,
    Severity,
)
from monitoring.probes import netguard

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
GIVE_UP_AFTER = dt.timedelta(hours=24)
# A channel failing this many deliveries in a row is shown as failing and Admins are told.
FAILING_AFTER = 3
POOL_SIZE = 4
PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
_ERROR_MAX = 500


def timeout_s() -> float:
    return float(settings.UPSTREAM.get("CHANNEL_TIMEOUT_S", 10))


# --- The message -----------------------------------------------------------------------------


@dataclass
class Message:
    """What every kind renders: one alert at one event, as plain data."""

    event: str
    alert_id: int
    fingerprint: str
    title: str
    summary: str
    state: str
    severity: str
    rule: str
    rule_kind: str
    integration: str
    environment: str
    link: str
    first_seen: dt.datetime
    last_seen: dt.datetime
    acknowledged_at: dt.datetime | None = None
    acknowledged_by: str = ""
    resolved_at: dt.datetime | None = None
    facts: list[list[str]] = field(default_factory=list)
    test: bool = False

    @classmethod
    def of(cls, alert: Alert, event: str, *, test: bool = False) -> Message:
        from monitoring.alerts.notify import alert_link

        integ = alert.integration
        facts = (alert.figures or {}).get("facts") or []
        return cls(
            event=event,
            alert_id=alert.pk or 0,
            fingerprint=alert.fingerprint,
            title=alert.title,
            summary=alert.summary,
            state=alert.state,
            severity=alert.rule.severity,
            rule=alert.rule.name,
            rule_kind=alert.rule.kind,
            integration=integ.name if integ else "",
            environment=integ.environment if integ else "",
            link=alert_link(alert) if alert.pk else settings.SITE_URL,
            first_seen=alert.first_seen,
            last_seen=alert.last_seen,
            acknowledged_at=alert.acknowledged_at,
            acknowledged_by=alert.acknowledged_by.get_username() if alert.acknowledged_by else "",
            resolved_at=alert.resolved_at,
            facts=[
                [str(f[0]), str(f[1])] for f in facts if isinstance(f, list | tuple) and len(f) == 2
            ][:10],
            test=test,
        )

    @property
    def headline(self) -> str:
        label = {"resolved": "RESOLVED", "acknowledged": "ACKNOWLEDGED"}.get(
            self.event, self.event.upper()
        )
        return f"{'[TEST] ' if self.test else ''}[{label}] {self.title}"

    def payload(self) -> dict:
        """The webhook kind's documented JSON body (docs/channels.md)."""
        return {
            "type": f"alert.{self.event}",
            "timestamp": timezone.now().isoformat(),
            "test": self.test,
            "data": {
                "alert": {
                    "id": self.alert_id,
                    "fingerprint": self.fingerprint,
                    "title": self.title,
                    "summary": self.summary,
                    "state": self.state,
                    "severity": self.severity,
                    "url": self.link,
                    "first_seen": _iso(self.first_seen),
                    "last_seen": _iso(self.last_seen),
                    "acknowledged_at": _iso(self.acknowledged_at),
                    "acknowledged_by": self.acknowledged_by or None,
                    "resolved_at": _iso(self.resolved_at),
                    "facts": self.facts,
                },
                "rule": {"name": self.rule, "kind": self.rule_kind},
                "integration": (
                    {"name": self.integration, "environment": self.environment}
                    if self.integration
                    else None
                ),
            },
        }


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass
class Outbound:
    """One HTTP request a kind wants sent (already resolved: it holds secrets, never stored)."""

    url: str
    body: bytes
    headers: dict[str, str]


@dataclass
class Result:
    ok: bool
    code: int | None = None
    error: str = ""
    retry: bool = True


# --- Kinds -----------------------------------------------------------------------------------


class Kind:
    """A channel kind: its settings, and the request one message becomes."""

    value: ClassVar[str]
    required: ClassVar[tuple[str, ...]] = ()
    optional: ClassVar[tuple[str, ...]] = ()
    # Settings that must be ${ENV} references: they carry credentials.
    secret: ClassVar[tuple[str, ...]] = ()
    url_setting: ClassVar[str | None] = "url"
    # Whether the receiver tracks the incident's state and so hears of acknowledgements.
    sends_acknowledged: ClassVar[bool] = False
    # Alerts fan out by e-mail address instead of a request (the e-mail kind).
    is_email: ClassVar[bool] = False

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.settings = channel.settings or {}

    @classmethod
    def validate(cls, raw: object) -> dict:
        if not isinstance(raw, dict):
            raise ValueError("Settings must be a JSON object.")
        known = set(cls.required) | set(cls.optional)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(
                f"Unknown setting {', '.join(unknown)}; expected {', '.join(sorted(known))}."
            )
        missing = [k for k in cls.required if not raw.get(k)]
        if missing:
            raise ValueError(f"Missing setting {', '.join(missing)}.")
        for key in cls.secret:
            value = raw.get(key)
            if value in (None, ""):
                continue
            if not isinstance(value, str) or not envref.names_in(value):
                raise ValueError(
                    f"{key} carries a credential: give it as an environment reference, "
                    f"e.g. ${{UPSTREAM_SECRET_{cls.value.upper()}_{key.upper()}}}."
                )
        for value in raw.values():
            if isinstance(value, str):
                try:
                    envref.check(value)
                except envref.ForbiddenReference as exc:
                    raise ValueError(str(exc)) from None
        cls.check_more(raw)
        return raw

    @classmethod
    def check_more(cls, raw: dict) -> None:
        """Kind-specific checks beyond presence and references."""

    def value_of(self, key: str, default: str = "") -> str:
        """A setting with its references resolved; an unset variable is an error, not ""."""
        text = str(self.settings.get(key) or default)
        unset = [n for n in envref.names_in(text) if n not in os.environ]
        if unset:
            raise ValueError(f"environment variable {', '.join(unset)} is not set")
        envref.check(text)
        return envref.resolve(text, os.environ)

    def shown(self) -> list[tuple[str, str]]:
        """Settings as the UI may show them: references as written, never their values."""
        return [(k, str(v)) for k, v in self.settings.items()]

    def build(self, message: Message) -> Outbound | None:
        """The request for this message, or None when this kind skips the event."""
        raise NotImplementedError

    def accepted(self, response: httpx.Response) -> bool:
        return 200 <= response.status_code < 300

    @classmethod
    def label(cls) -> str:
        return ChannelKind(cls.value).label


def _json(data: dict) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


class Email(Kind):
    value = ChannelKind.EMAIL
    required = ("addresses",)
    url_setting = None
    is_email = True

    @classmethod
    def check_more(cls, raw: dict) -> None:
        addresses = raw["addresses"]
        if isinstance(addresses, str):
            addresses = [a.strip() for a in addresses.replace("\n", ",").split(",")]
        if not isinstance(addresses, list) or not addresses:
            raise ValueError("addresses: a list of e-mail addresses.")
        for a in addresses:
            try:
                validate_email(a)
            except ValidationError:
                raise ValueError(f"addresses: {a!r} is not an e-mail address.") from None
        raw["addresses"] = [a for a in addresses if a]

    def addresses(self) -> list[str]:
        return list(self.settings.get("addresses") or [])

    def build(self, message: Message) -> Outbound | None:
        return None


class Webhook(Kind):
    """Any HTTP receiver; signed the Standard Webhooks way (standardwebhooks.com)."""

    value = ChannelKind.WEBHOOK
    required = ("url", "secret")
    optional = ("template", "content_type")
    secret = ("secret",)
    sends_acknowledged = True

    @classmethod
    def check_more(cls, raw: dict) -> None:
        if raw.get("template"):
            try:
                _engine().from_string(raw["template"])
            except TemplateSyntaxError as exc:
                raise ValueError(f"template: {exc}") from None

    def build(self, message: Message) -> Outbound:
        payload = message.payload()
        if self.settings.get("template"):
            body = (
                _engine()
                .from_string(self.settings["template"])
                .render(Context({"payload": payload, **payload["data"], "type": payload["type"]}))
                .encode()
            )
            content_type = self.settings.get("content_type") or "application/json"
        else:
            body, content_type = _json(payload), "application/json"
        msg_id = f"msg_{uuid.uuid4().hex}"
        stamp = str(int(timezone.now().timestamp()))
        headers = {
            "content-type": content_type,
            "webhook-id": msg_id,
            "webhook-timestamp": stamp,
            "webhook-signature": sign(self.value_of("secret"), msg_id, stamp, body),
        }
        return Outbound(self.value_of("url"), body, headers)


def sign(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """The Standard Webhooks `v1` signature: HMAC-SHA256 over "id.timestamp.body"."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _engine() -> Engine:
    # Bodies are JSON or text, not HTML: escaping would corrupt them.
    return Engine(autoescape=False)


class Slack(Kind):
    """Slack incoming webhook with a Block Kit message."""

    value = ChannelKind.SLACK
    required = ("url",)
    secret = ("url",)

    def build(self, message: Message) -> Outbound:
        fields = [
            {"type": "mrkdwn", "text": f"*Integration*\n{message.integration or 'all'}"},
            {"type": "mrkdwn", "text": f"*Severity*\n{message.severity}"},
            {"type": "mrkdwn", "text": f"*Rule*\n{message.rule}"},
            {"type": "mrkdwn", "text": f"*Since*\n{message.first_seen:%Y-%m-%d %H:%M} UTC"},
        ]
        blocks = [
            {"type": "header", "text": {"type": "plain_text", "text": message.headline[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": message.summary[:2900] or " "}},
            {"type": "section", "fields": fields},
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open in Upstream"},
                        "url": message.link,
                    }
                ],
            },
        ]
        body = {"text": message.headline, "blocks": blocks}
        return Outbound(self.value_of("url"), _json(body), {"content-type": "application/json"})


class Teams(Kind):
    """Microsoft Teams through a Workflows webhook, posting an Adaptive Card."""

    value = ChannelKind.TEAMS
    required = ("url",)
    secret = ("url",)

    def build(self, message: Message) -> Outbound:
        facts = [
            {"title": "Integration", "value": message.integration or "all"},
            {"title": "Severity", "value": message.severity},
            {"title": "Rule", "value": message.rule},
            {"title": "Since", "value": f"{message.first_seen:%Y-%m-%d %H:%M} UTC"},
        ]
        card = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": [
                {
                    "type": "TextBlock",
                    "text": message.headline,
                    "weight": "Bolder",
                    "size": "Medium",
                    "wrap": True,
                },
                {"type": "TextBlock", "text": message.summary or " ", "wrap": True},
                {"type": "FactSet", "facts": facts},
            ],
            "actions": [
                {"type": "Action.OpenUrl", "title": "Open in Upstream", "url": message.link}
            ],
        }
        body = {
            "type": "message",
            "attachments": [
                {
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": None,
                    "content": card,
                }
            ],
        }
        return Outbound(self.value_of("url"), _json(body), {"content-type": "application/json"})


class PagerDuty(Kind):
    """PagerDuty Events API v2; the alert's fingerprint is the dedup key of every event."""

    value = ChannelKind.PAGERDUTY
    required = ("routing_key",)
    optional = ("url",)
    secret = ("routing_key",)
    sends_acknowledged = True
    ACTIONS: ClassVar[dict[str, str]] = {
        "firing": "trigger",
        "reminder": "trigger",
        "escalation": "trigger",
        "acknowledged": "acknowledge",
        "resolved": "resolve",
    }

    def build(self, message: Message) -> Outbound | None:
        action = self.ACTIONS.get(message.event)
        if action is None:
            return None
        body: dict = {
            "routing_key": self.value_of("routing_key"),
            "event_action": action,
            "dedup_key": dedup_key(message),
        }
        if action == "trigger":
            body["payload"] = {
                "summary": message.headline[:1024],
                "source": message.integration or "Upstream",
                "severity": "critical" if message.severity == Severity.CRITICAL else "warning",
                "timestamp": message.first_seen.isoformat(),
                "component": message.integration or None,
                "class": message.rule_kind,
                "custom_details": {"summary": message.summary, **dict(message.facts)},
            }
            body["client"] = "Upstream"
            body["client_url"] = message.link
            body["links"] = [{"href": message.link, "text": "Open in Upstream"}]
        return Outbound(
            self.value_of("url", PAGERDUTY_URL), _json(body), {"content-type": "application/json"}
        )


def dedup_key(message: Message) -> str:
    # A test must never touch a real incident's key.
    return f"upstream-test-{message.alert_id}" if message.test else message.fingerprint[:255]


class Ntfy(Kind):
    """ntfy topic URL; priority and tags follow the severity."""

    value = ChannelKind.NTFY
    required = ("url",)
    optional = ("token",)
    secret = ("token",)
    PRIORITY: ClassVar[dict[str, str]] = {Severity.WARNING: "4", Severity.CRITICAL: "5"}
    TAGS: ClassVar[dict[str, str]] = {
        Severity.WARNING: "warning",
        Severity.CRITICAL: "rotating_light",
    }

    def build(self, message: Message) -> Outbound:
        if message.event == "resolved":
            priority, tags = "3", "white_check_mark"
        else:
            priority = self.PRIORITY.get(message.severity, "3")
            tags = self.TAGS.get(message.severity, "warning")
        headers = {
            "content-type": "text/plain; charset=utf-8",
            # ntfy decodes RFC 2047 encoded words, so titles keep their "·" and "—".
            "Title": _header_text(message.headline[:250]),
            "Priority": priority,
            "Tags": tags,
            "Click": message.link,
        }
        if self.settings.get("token"):
            headers["Authorization"] = f"Bearer {self.value_of('token')}"
        text = message.summary or message.title
        return Outbound(self.value_of("url"), text.encode(), headers)


def _header_text(text: str) -> str:
    if text.isascii():
        return text
    return "=?UTF-8?B?" + base64.b64encode(text.encode()).decode() + "?="


class Apprise(Kind):
    """Anything Apprise reaches (apprise.readthedocs.io), through the `apprise` extra."""

    value = ChannelKind.APPRISE
    required = ("url",)
    secret = ("url",)
    url_setting = None  # Apprise makes its own connections, to services it names itself

    def build(self, message: Message) -> Outbound:
        return Outbound(self.value_of("url"), (message.summary or message.title).encode(), {})


KINDS: dict[str, type[Kind]] = {
    k.value: k for k in (Email, Webhook, Slack, Teams, PagerDuty, Ntfy, Apprise)
}


def kind_of(channel: Channel) -> Kind:
    return KINDS[channel.kind](channel)


def validate_settings(kind: str, raw: object) -> dict:
    """The settings as stored, or ValueError saying what is wrong."""
    if kind not in KINDS:
        raise ValueError(f"Unknown channel kind {kind!r}.")
    return KINDS[kind].validate(dict(raw) if isinstance(raw, dict) else raw)


def check_channel_kinds(app_configs, **kwargs) -> list:
    """System check: the registry and ChannelKind's choices name the same kinds."""
    from django.core.checks import Error

    if set(KINDS) == set(ChannelKind.values):
        return []
    return [
        Error(
            "Channel kinds and their classes differ: "
            f"{sorted(set(KINDS) ^ set(ChannelKind.values))}",
            hint="Add a Kind subclass to monitoring.alerts.channels.KINDS for every ChannelKind.",
            id="upstream.E016",
        )
    ]


# --- Routing ---------------------------------------------------------------------------------


class Router:
    """Which channels hear about an alert; the routes are read once per evaluation cycle."""

    def __init__(self) -> None:
        self._routes: list[Route] | None = None

    def routes(self) -> list[Route]:
        if self._routes is None:
            self._routes = list(Route.objects.prefetch_related("channels"))
        return self._routes

    def __call__(self, alert: Alert) -> list[Channel]:
        matched = [r for r in self.routes() if r.matches(alert)]
        if not matched:
            matched = [r for r in self.routes() if r.is_default]
        seen: dict[int, Channel] = {}
        for route in matched:
            for channel in route.channels.all():
                if channel.enabled:
                    seen.setdefault(channel.pk, channel)
        return list(seen.values())


def route_channels(route: Route | None) -> list[Channel]:
    if route is None:
        return []
    return [c for c in route.channels.all() if c.enabled]


# --- Sending ---------------------------------------------------------------------------------


def _post(kind: Kind, outbound: Outbound) -> Result:
    """Send one request; never raises. Runs in a pool thread: no database here."""
    try:
        if isinstance(kind, Apprise):
            return _apprise(outbound)
        if kind.url_setting:
            netguard.check_url(outbound.url, allow_hosts=settings.UPSTREAM["PROBE_ALLOW_HOSTS"])
        with httpx.Client(timeout=timeout_s(), follow_redirects=False) as client:
            response = client.post(outbound.url, content=outbound.body, headers=outbound.headers)
    except netguard.BlockedDestination as exc:
        return Result(False, error=f"blocked: {exc}", retry=False)
    except (httpx.HTTPError, netguard.UnresolvableHost, OSError) as exc:
        return Result(False, error=f"{type(exc).__name__}: {exc}"[:_ERROR_MAX])
    if kind.accepted(response):
        return Result(True, response.status_code)
    detail = response.text[:200].replace("\n", " ")
    # Timeouts, rate limits and server errors pass; other refusals will not.
    retry = response.status_code in (408, 429) or response.status_code >= 500
    return Result(False, response.status_code, f"HTTP {response.status_code}: {detail}", retry)


def _apprise(outbound: Outbound) -> Result:
    try:
        import apprise
    except ImportError:
        return Result(False, error="Apprise is not installed (pip install 'upstream[apprise]')")
    body = outbound.body.decode()
    sender = apprise.Apprise()
    if not sender.add(outbound.url):
        return Result(False, error="Apprise does not understand this URL", retry=False)
    ok = sender.notify(body=body, title=body.splitlines()[0][:200] if body else "Upstream")
    return Result(bool(ok), error="" if ok else "Apprise reported a failed notification")


def send_now(channel: Channel, message: Message) -> Result:
    """Build and send one message at once (the "Send test" button); never raises."""
    kind = kind_of(channel)
    if kind.is_email:
        from monitoring.alerts import notify

        return notify.send_test_email(kind.addresses(), message)
    try:
        outbound = kind.build(message)
    except (ValueError, envref.ForbiddenReference) as exc:
        return Result(False, error=str(exc)[:_ERROR_MAX], retry=False)
    if outbound is None:
        return Result(True, error="this kind ignores that event")
    return _post(kind, outbound)


@dataclass
class ChannelReport:
    sent: int = 0
    failed: int = 0
    gave_up: int = 0
    skipped: int = 0


def _lease() -> dt.timedelta:
    return dt.timedelta(seconds=2 * timeout_s() + 60)


def _claim(now: dt.datetime, limit: int = 200) -> list[Delivery]:
    due = list(
        Delivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    claimed = []
    for pk in due:
        # One UPDATE per row with the due condition: whoever changes it first owns it.
        if Delivery.objects.filter(
            pk=pk, status=DeliveryStatus.PENDING, next_attempt_at__lte=now
        ).update(attempts=F("attempts") + 1, next_attempt_at=now + _lease()):
            claimed.append(pk)
    return list(
        Delivery.objects.filter(pk__in=claimed).select_related(
            "channel",
            "alert__rule",
            "alert__integration",
            "alert__acknowledged_by",
            "alert__inhibited_by",
        )
    )


def deliver_due(now: dt.datetime | None = None) -> ChannelReport:
    """Send every due channel delivery, all at once, each bounded by the channel timeout."""
    now = now or timezone.now()
    report = ChannelReport()
    work: list[tuple[Delivery, Kind, Outbound]] = []
    for d in _claim(now):
        reason = stale(d)
        if reason:
            _finish(d, Result(False, error=reason), now, status=DeliveryStatus.SUPPRESSED)
            report.skipped += 1
            continue
        kind = kind_of(d.channel)
        try:
            outbound = kind.build(Message.of(d.alert, d.event))
        except (ValueError, envref.ForbiddenReference) as exc:
            report.failed += 1
            report.gave_up += _finish(d, Result(False, error=str(exc), retry=False), now)
            continue
        if outbound is None:
            _finish(d, Result(False, error="this kind ignores that event"), now,
                    status=DeliveryStatus.SUPPRESSED)  # fmt: skip
            report.skipped += 1
            continue
        work.append((d, kind, outbound))
    if not work:
        return report
    with ThreadPoolExecutor(max_workers=min(POOL_SIZE, len(work))) as pool:
        results = list(pool.map(lambda w: _post(w[1], w[2]), work))
    for (d, _kind, _out), result in zip(work, results, strict=True):
        if result.ok:
            report.sent += 1
        else:
            report.failed += 1
        report.gave_up += _finish(d, result, now)
    return report


def stale(delivery: Delivery) -> str:
    """Why a queued delivery should no longer go out ("" if it should): its alert joined an
    outage meanwhile, or a reminder's alert was acknowledged or resolved."""
    alert = delivery.alert
    from monitoring.alerts.notify import inhibited

    if inhibited(alert) and delivery.event not in (
        Delivery.Event.RESOLVED,
        Delivery.Event.ACKNOWLEDGED,
    ):
        return f"inhibited: part of the provider-down alert #{alert.inhibited_by_id}"
    if delivery.event in (Delivery.Event.REMINDER, Delivery.Event.ESCALATION):
        if alert.state == AlertState.ACKNOWLEDGED:
            who = alert.acknowledged_by.get_username() if alert.acknowledged_by else "someone"
            return f"not sent: acknowledged by {who} before it went out"
        if alert.state == AlertState.RESOLVED:
            return "not sent: the alert resolved before it went out"
    return ""


def _finish(d: Delivery, result: Result, now: dt.datetime, status: str | None = None) -> int:
    """Record an attempt's outcome on the row and the channel's health; 1 if it gave up."""
    fields: dict = {"response_code": result.code, "error": result.error[:_ERROR_MAX]}
    gave_up = 0
    if status is not None:
        fields["status"] = status
    elif result.ok:
        fields.update(status=DeliveryStatus.SENT, sent_at=now, error="")
    elif result.retry and d.attempts < MAX_ATTEMPTS and now - d.created < GIVE_UP_AFTER:
        from monitoring.alerts.notify import backoff

        fields["next_attempt_at"] = now + backoff(d.attempts)
    else:
        fields["status"] = DeliveryStatus.FAILED
        gave_up = 1
    Delivery.objects.filter(pk=d.pk).update(**fields)
    if status is None:
        _health(d.channel, result, now)
    return gave_up


def _health(channel: Channel, result: Result, now: dt.datetime) -> None:
    if result.ok:
        Channel.objects.filter(pk=channel.pk).update(
            consecutive_failures=0, failing_since=None, last_error="", admins_warned_at=None
        )
        return
    log.warning("Alert channel %s failed: %s", channel.name, result.error)
    with transaction.atomic():
        Channel.objects.filter(pk=channel.pk).update(
            consecutive_failures=F("consecutive_failures") + 1, last_error=result.error[:500]
        )
        Channel.objects.filter(pk=channel.pk, failing_since__isnull=True).update(failing_since=now)
        # Tell the Admins once per failing streak: claim the warning before sending it.
        warn = Channel.objects.filter(
            pk=channel.pk,
            consecutive_failures__gte=FAILING_AFTER,
            admins_warned_at__isnull=True,
        ).update(admins_warned_at=now)
    if warn:
        from monitoring.alerts import notify

        channel.refresh_from_db()
        notify.warn_admins_channel_failing(channel)


def failing_channels() -> list[Channel]:
    return list(Channel.objects.filter(enabled=True, consecutive_failures__gte=FAILING_AFTER))


def sample_alert(channel: Channel) -> Alert:
    """An unsaved alert for "Send test": never stored, never reaches a real incident."""
    from monitoring.models import AlertRule, RuleKind

    now = timezone.now()
    rule = AlertRule(name="Test alert", kind=RuleKind.ERROR_RATE, severity=Severity.WARNING)
    return Alert(
        rule=rule,
        fingerprint=f"test-{channel.pk}",
        title=f"Test from Upstream for channel {channel.name}",
        summary="This is a test notification sent from Upstream's channel page. No action needed.",
        state=AlertState.FIRING,
        first_seen=now,
        last_seen=now,
    )


def send_test(channel: Channel) -> Result:
    """Deliver a sample alert to this channel now ("Send test"); never raises."""
    return send_now(channel, Message.of(sample_alert(channel), Delivery.Event.FIRING, test=True))
