"""System checks that catch a misconfigured Upstream before it misbehaves."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


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


@register(Tags.database)
def check_schedules(app_configs, databases=None, **kwargs):
    """Every task schedule names one of Upstream's own task entry points and no hook.

    A database check (run by `migrate` and `manage.py check --database default`): the rows were
    written before schedules were validated on save, or by something that bypassed it.
    """
    from django.db import DatabaseError
    from django_q.models import Schedule

    from monitoring.identity import former_task_funcs, schedule_problems

    errors, former = [], former_task_funcs()
    for alias in databases or ():
        try:
            rows = list(Schedule.objects.using(alias).values_list("pk", "name", "func", "hook"))
        except DatabaseError:  # not migrated yet: nothing can be scheduled either
            continue
        for pk, name, func, hook in rows:
            for problem in schedule_problems(func, hook).values():
                errors.append(
                    Error(
                        f"Task schedule {name or pk!r} would run code Upstream does not ship: "
                        f"{problem}",
                        hint="The worker imports and calls that dotted path. Delete the "
                        "schedule in the admin (as a superuser); `manage.py setup_upstream` "
                        "recreates Upstream's own.",
                        obj=f"django_q.Schedule {pk}",
                        id="upstream.E010",
                    )
                )
            if func in former:
                errors.append(
                    Warning(
                        f"Task schedule {name or pk!r} names {func!r}, the former path of "
                        f"{former[func]!r}",
                        hint="Run `manage.py setup_upstream`, which moves it.",
                        obj=f"django_q.Schedule {pk}",
                        id="upstream.W010",
                    )
                )
    return errors


@register()
def check_channel_kinds(app_configs, **kwargs):
    from monitoring.alerts.channels import check_channel_kinds as check

    return check(app_configs)


@register(Tags.database)
def check_alerts_reach_someone(app_configs, databases=None, **kwargs):
    """A firing alert nobody hears about is worse than none: say so (`check --database`)."""
    from django.db import DatabaseError

    from monitoring.alerts.notify import unheard_alerts

    if not databases:
        return []
    try:
        unheard = unheard_alerts()
    except DatabaseError:  # not migrated yet
        return []
    if not unheard:
        return []
    titles = ", ".join(f"#{a.pk}" for a in unheard[:5]) + (" …" if len(unheard) > 5 else "")
    return [
        Warning(
            f"{len(unheard)} firing alert(s) have nobody to notify: {titles}",
            hint="Give the rule recipients, route it to a channel, set the integration's "
            "owner, or give an Admin an e-mail address.",
            id="upstream.W016",
        )
    ]


@register()
def check_presets(app_configs, **kwargs):
    """The preset registry names only rule kinds and webhook schemes Upstream has."""
    from monitoring import presets
    from monitoring.models import RuleKind
    from monitoring.webhooks.schemes import SCHEMES

    schemes = list(SCHEMES)
    return [
        Error(
            f"Preset registry out of step: {problem}",
            hint="Fix the preset in monitoring/presets/catalog.py, or add the rule kind / "
            "webhook scheme it expects.",
            obj="monitoring.presets.ALL",
            id="upstream.E030",
        )
        for problem in presets.problems(RuleKind.values, schemes)
    ]


@register(Tags.database)
def check_integration_presets(app_configs, databases=None, **kwargs):
    """Every stored Integration.preset is a preset the registry knows (`check --database`)."""
    from django.db import DatabaseError

    from monitoring import presets
    from monitoring.models import Integration

    errors = []
    for alias in databases or ():
        try:
            rows = list(
                Integration.objects.using(alias)
                .exclude(preset="")
                .exclude(preset__in=list(presets.ALL))
                .values_list("pk", "slug", "preset")[:20]
            )
        except DatabaseError:  # not migrated yet
            continue
        for pk, slug, preset in rows:
            errors.append(
                Warning(
                    f"Integration {slug!r} names preset {preset!r}, which this build does not "
                    "have: its errors are parsed with the generic rules",
                    hint=f"Set its preset to one of {', '.join(sorted(presets.ALL))}, or blank.",
                    obj=f"monitoring.Integration {pk}",
                    id="upstream.W030",
                )
            )
    return errors


@register()
def check_webhook_schemes(app_configs, **kwargs):
    """The webhook scheme registry and WebhookEndpoint.scheme's choices name the same schemes."""
    from monitoring.models import WebhookScheme
    from monitoring.webhooks import schemes

    registered, choices = set(schemes.SCHEMES), set(WebhookScheme.values)
    mismatched = [key for key, scheme in schemes.SCHEMES.items() if scheme.key != key]
    if registered == choices and not mismatched:
        return []
    return [
        Error(
            "Webhook schemes and WebhookScheme choices disagree: "
            f"only registered {sorted(registered - choices)}, only choices "
            f"{sorted(choices - registered)}, registered under another key {mismatched}",
            hint="Add the scheme class to monitoring/webhooks/schemes.py SCHEMES and its value "
            "to WebhookScheme (with a migration), or remove both.",
            id="upstream.E040",
        )
    ]
