"""System checks that catch a misconfigured Upstream before it misbehaves."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Warning, register


@register()
def check_task_queue(app_configs, **kwargs):
    conf = getattr(settings, "Q_CLUSTER", {})
    timeout, retry = conf.get("timeout"), conf.get("retry")
    if not timeout or not retry or retry <= timeout:
        return [
            Error(
                f"Q_CLUSTER retry ({retry}) must be greater than timeout ({timeout})",
                hint="Otherwise a task still running is handed to a second worker. "
                "Set Q_RETRY above Q_TIMEOUT.",
                id="upstream.E001",
            )
        ]
    return []


@register()
def check_workers(app_configs, **kwargs):
    workers = getattr(settings, "Q_CLUSTER", {}).get("workers", 1)
    if workers < 2:
        return [
            Warning(
                f"Q_WORKERS={workers}: the probe dispatcher keeps one worker busy, so alerts, "
                "e-mails and pruning would wait behind it",
                hint="Run at least 2 workers (Q_WORKERS=2, the default).",
                id="upstream.W002",
            )
        ]
    return []


@register()
def check_email(app_configs, **kwargs):
    smtp = settings.EMAIL_BACKEND == "django.core.mail.backends.smtp.EmailBackend"
    if settings.ALERT_EMAILS_ENABLED and smtp and not settings.EMAIL_HOST:
        return [
            Warning(
                "Alert e-mails are on but EMAIL_HOST is not set, so no alert will reach anyone",
                hint="Set EMAIL_HOST (and EMAIL_PORT, EMAIL_HOST_USER, EMAIL_HOST_PASSWORD), "
                "or ALERT_EMAILS_ENABLED=0.",
                id="upstream.W001",
            )
        ]
    return []
