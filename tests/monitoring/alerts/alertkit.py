"""Helpers for the alert tests: traffic through the real rollup, baseline history, an SMTP sink."""

from __future__ import annotations

import datetime as dt
import logging
import socket
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from aiosmtpd.controller import Controller
from django.db import transaction

from monitoring import rollup
from monitoring.models import (
    ALL_ENDPOINTS,
    Grain,
    Integration,
    MetricBucket,
    Outcome,
    RequestLog,
)
from monitoring.parsing import classify_status

# A Tuesday, mid-hour, mid-minute.
T0 = dt.datetime(2026, 3, 10, 12, 2, 30, tzinfo=dt.UTC)


def make_integration(name: str = "Paubox", **extra) -> Integration:
    extra.setdefault("owner_email", f"{name.lower()}-owner@example.com")
    return Integration.objects.create(
        name=name,
        slug=name.lower(),
        environment="production",
        created=T0 - dt.timedelta(days=30),
        **extra,
    )


def calls(
    integration: Integration,
    at: dt.datetime,
    n: int,
    *,
    status: int | None = 200,
    method: str = "GET",
    path: str = "/v1/messages/{id}",
    source: str = "client",
    latency_ms: float = 120.0,
    **fields,
) -> None:
    """Record n attempts at `at` the way the recorder does: raw rows and buckets together."""
    outcome = Outcome.TIMEOUT if status is None else classify_status(status)
    rows = [
        RequestLog(
            integration=integration,
            created=at,
            source=source,
            method=method,
            host="api.example.com",
            path=path,
            status=status,
            outcome=outcome,
            latency_ms=latency_ms,
            **fields,
        )
        for _ in range(n)
    ]
    with transaction.atomic():
        RequestLog.objects.bulk_create(rows)
        rollup.apply_rows(rows)


def history(
    integration: Integration,
    now: dt.datetime,
    *,
    per_hour_401: int = 0,
    per_hour_calls: int = 0,
    days: int = 7,
) -> None:
    """Hour buckets (all-endpoint rows) for every hour of the `days` before the current hour.

    Seven days of raw rows would be slow to write; the hour buckets are what the baselines read.
    """
    hour = now.replace(minute=0, second=0, microsecond=0)
    total = max(per_hour_calls, per_hour_401)
    MetricBucket.objects.bulk_create(
        MetricBucket(
            grain=Grain.HOUR,
            start=hour - dt.timedelta(hours=h),
            integration=integration,
            endpoint=ALL_ENDPOINTS,
            source="client",
            total=total,
            ok=total - per_hour_401,
            client_errors=per_hour_401,
            s4xx=per_hour_401,
            s401=per_hour_401,
            latency_sum=100.0 * total,
        )
        for h in range(1, days * 24 + 1)
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SmtpSink:
    """A real SMTP server on loopback (aiosmtpd) that keeps every message it accepts."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.messages: list[EmailMessage] = []
        self._controller: Controller | None = None

    async def handle_DATA(self, server, session, envelope):
        message = BytesParser(policy=policy.default).parsebytes(envelope.content)
        message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 OK"

    def start(self) -> None:
        logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def configure(self, settings) -> None:
        """Point Django's SMTP backend at this server (pytest-django defaults to locmem)."""
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST = "127.0.0.1"
        settings.EMAIL_PORT = self.port
        settings.EMAIL_USE_TLS = False
        settings.EMAIL_USE_SSL = False
        settings.EMAIL_HOST_USER = ""
        settings.EMAIL_HOST_PASSWORD = ""
        settings.EMAIL_TIMEOUT = 5
        settings.SITE_URL = "https://upstream.example.com"

    @property
    def subjects(self) -> list[str]:
        # A long encoded subject is folded onto a continuation line; unfolding keeps its space.
        return [str(m["Subject"]).strip() for m in self.messages]

    @staticmethod
    def text(message: EmailMessage) -> str:
        return message.get_body(preferencelist=("plain",)).get_content()

    @staticmethod
    def html(message: EmailMessage) -> str:
        return message.get_body(preferencelist=("html",)).get_content()
