"""Django admin: configuration (audited), accounts and task queue by role, records read-only."""

from __future__ import annotations

import datetime as dt

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import admin as auth_admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.core.paginator import Paginator
from django.db import models
from django.db.models import Q
from django.db.models.constants import LOOKUP_SEP
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html_join
from django.utils.text import capfirst
from django_q import admin as q_admin
from django_q.models import Failure, OrmQ, Schedule, Success

from monitoring import audit, identity
from monitoring.alerts.forms import AlertRuleForm
from monitoring.models import (
    Alert,
    AlertRule,
    AuditLog,
    Channel,
    Delivery,
    Integration,
    MaintenanceWindow,
    Notification,
    NotificationPreference,
    Probe,
    ProbeResult,
    RecorderLoss,
    RequestLog,
    Route,
    Severity,
    Silence,
)
from monitoring.probes.forms import ProbeForm
from monitoring.probes.schedule import run_now
from monitoring.roles import Role

# The admin's run-now action waits for the runs; keep one request bounded.
RUN_NOW_LIMIT = 20


# Date parts a changelist filter may name, and the values each takes. Django turns them into
# datetimes before the query runs, where a year of -1 or of twenty digits raises (a 500, not
# a refusal); years stop at 9998 because the date hierarchy also computes the year after.
_DATE_PARTS = {
    "year": (1, 9998), "iso_year": (1, 9998), "quarter": (1, 4), "month": (1, 12),
    "week": (1, 53), "day": (1, 31), "week_day": (1, 7), "iso_week_day": (1, 7),
    "hour": (0, 23), "minute": (0, 59), "second": (0, 59),
}  # fmt: skip
_COMPARISONS = {"exact", "gt", "gte", "lt", "lte", "in"}


def _int_within(value: str, low: int, high: int) -> bool:
    try:
        return low <= int(value) <= high
    except ValueError:
        return False


def date_filter_allowed(model: type[models.Model], lookup: str, value: str) -> bool:
    """False for a changelist filter on a date field that the database layer would choke on:
    a date part outside the calendar, or a time whose UTC form leaves years 1–9999."""
    opts, parts, field = model._meta, lookup.split(LOOKUP_SEP), None
    while parts:
        try:
            field = opts.get_field(parts.pop(0))
        except FieldDoesNotExist:
            return True  # not a field at all: Django refuses or ignores it by itself
        if not (field.is_relation and field.related_model is not None and parts):
            break
        opts = field.related_model._meta
    if not isinstance(field, models.DateField):
        return True
    for i, part in enumerate(parts):
        if part in _DATE_PARTS:
            tail = parts[i + 1 :]
            if len(tail) > 1 or (tail and tail[0] not in _COMPARISONS):
                return False
            items = value.split(",") if tail == ["in"] else [value]
            return all(_int_within(item, *_DATE_PARTS[part]) for item in items)
    if isinstance(field, models.DateTimeField) and (not parts or parts[0] in _COMPARISONS):
        for item in value.split(",") if parts == ["in"] else [value]:
            try:
                moment = field.to_python(item)
            except ValidationError:
                continue  # Django answers an unreadable date itself
            if moment is not None and timezone.is_aware(moment):
                try:
                    moment.astimezone(dt.UTC)
                except OverflowError:
                    return False
    return True


class UpstreamAdminMixin:
    """What every ModelAdmin on Upstream's site shares, the stock ones it replaces included."""

    def lookup_allowed(self, lookup, value, request=None):
        # Refused lookups answer 400 (DisallowedModelAdminLookup).
        if not date_filter_allowed(self.model, lookup, value):
            return False
        return super().lookup_allowed(lookup, value, request)

    # Account changes are audited by signal receivers (monitoring.identity), which see no
    # request: the views that can save say whose request they serve.
    def changeform_view(self, request, *args, **kwargs):
        with identity.acting(request):
            return super().changeform_view(request, *args, **kwargs)

    def changelist_view(self, request, *args, **kwargs):
        with identity.acting(request):  # bulk actions
            return super().changelist_view(request, *args, **kwargs)

    def delete_view(self, request, *args, **kwargs):
        with identity.acting(request):
            return super().delete_view(request, *args, **kwargs)


def _cascades(model: type[models.Model], rows: models.QuerySet, depth: int = 0) -> list[tuple]:
    """(model, its rows) for everything that deleting `rows` removes by CASCADE, recursively."""
    found = []
    for rel in model._meta.get_fields(include_hidden=True):
        reverse_fk = rel.auto_created and not rel.concrete and (rel.one_to_many or rel.one_to_one)
        if not reverse_fk or rel.on_delete is not models.CASCADE or depth > 5:
            continue
        children = rel.related_model._base_manager.filter(
            **{f"{rel.field.name}__in": rows.values("pk")}
        )
        found.append((rel.related_model, children))
        found += _cascades(rel.related_model, children, depth + 1)
    return found


def history_counts(model: type[models.Model], pks: list) -> dict[type[models.Model], int]:
    """How many rows of each model deleting these objects takes with it (none: left out)."""
    reach: dict[type[models.Model], Q] = {}
    for child, rows in _cascades(model, model._base_manager.filter(pk__in=pks)):
        # A model reached by two paths (an alert via its rule and via its integration) once.
        reach[child] = reach.get(child, Q()) | Q(pk__in=rows.values("pk"))
    counts = {child: child._base_manager.filter(q).count() for child, q in reach.items()}
    return {child: n for child, n in counts.items() if n}


class AuditedAdmin(UpstreamAdminMixin, admin.ModelAdmin):
    """Every create, update and delete made through the admin lands in the audit log.

    Deleting configuration deletes its history too (request logs, buckets, results, alerts):
    a mistaken or retired integration must be able to go, and switching it off (`active`,
    `enabled`) is how to keep the history. The audit log has no foreign keys: it stays whole.
    """

    def save_model(self, request, obj, form, change):
        if not change or obj.pk is None:
            super().save_model(request, obj, form, change)
            audit.record_change(request, obj, None)
            return
        concrete = {f.name for f in obj._meta.concrete_fields if not f.primary_key}
        fields = [name for name in form.fields if name in concrete]
        before = audit.snapshot(type(obj).objects.get(pk=obj.pk), fields)
        # Write only what the form edits: background jobs update run-state columns (a probe's
        # state, an alert's timestamps) at the same time, and must not be overwritten.
        obj.save(update_fields=fields)
        audit.record_change(request, obj, before, fields=fields)

    def get_deleted_objects(self, objs, request):
        # Django's default lists every related row (millions of request logs) and wants delete
        # permission on each related model, which the record admins grant nobody: nothing
        # with history could go. Count the history instead, and ask permission only for the
        # configuration that goes with it (an integration's probes and rules).
        objs = list(objs)
        counts = history_counts(self.model, [obj.pk for obj in objs])
        perms_needed = set()
        for child in counts:
            child_admin = self.admin_site._registry.get(child)
            if isinstance(child_admin, AuditedAdmin) and not child_admin.has_delete_permission(
                request
            ):
                perms_needed.add(child._meta.verbose_name_plural)
        opts = self.model._meta
        listed: list = [f"{capfirst(opts.verbose_name)}: {obj}" for obj in objs]
        if counts:
            listed += [
                "and everything recorded about them:",
                [f"{capfirst(c._meta.verbose_name_plural)}: {n:,}" for c, n in counts.items()],
            ]
        model_count = {opts.verbose_name_plural: len(objs)}
        model_count |= {child._meta.verbose_name_plural: n for child, n in counts.items()}
        return listed, model_count, perms_needed, []

    def _audit_delete(self, request, obj) -> None:
        counts = history_counts(type(obj), [obj.pk])
        after = {"deleted_with": {c._meta.label: n for c, n in counts.items()}} if counts else None
        before = audit.snapshot(obj)
        audit.record(audit.Actions.DELETE, request=request, target=obj, before=before, after=after)

    def delete_model(self, request, obj):
        self._audit_delete(request, obj)
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self._audit_delete(request, obj)
        super().delete_queryset(request, queryset)


class ReadOnlyAdmin(UpstreamAdminMixin, admin.ModelAdmin):
    """Records, not configuration: nobody adds, edits or deletes them here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class NoCountPaginator(Paginator):
    """Large tables: don't COUNT(*) millions of rows to draw page links."""

    @cached_property
    def count(self):
        return 10**9


class IntegrationAdminForm(forms.ModelForm):
    """The integration form, with the preset offered as a choice from the registry."""

    preset = forms.ChoiceField(
        required=False,
        help_text="On add, the preset also gives the integration its documented path "
        "templates, redaction names, host patterns, probes and rules.",
    )

    class Meta:
        model = Integration
        fields = [
            "name", "slug", "environment", "preset", "base_url", "owner_email",
            "expected_api_version", "require_https", "path_templates", "redact_names",
            "host_patterns", "active", "created",
        ]  # fmt: skip

    def __init__(self, *args, **kwargs):
        from monitoring import presets

        super().__init__(*args, **kwargs)
        self.fields["preset"].choices = [("", "— none —"), *presets.choices()]

    def clean(self):
        from monitoring import presets

        cleaned = super().clean()
        name = cleaned.get("preset")
        if name and not cleaned.get("base_url") and presets.get(name).placeholders():
            self.add_error(
                "base_url", f"This preset needs a base URL like {presets.get(name).base_url}"
            )
        return cleaned


@admin.register(Integration)
class IntegrationAdmin(AuditedAdmin):
    form = IntegrationAdminForm
    list_display = ["name", "environment", "slug", "preset", "base_url", "owner_email", "active"]
    list_filter = ["environment", "active", "preset"]
    search_fields = ["name", "slug", "base_url"]
    prepopulated_fields = {"slug": ["name"]}

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if change or not obj.preset:
            return
        from monitoring import presets
        from monitoring.presets.setup import PresetError, apply, plan

        # The same path as `manage.py add_integration`, over what the form just created:
        # what was typed stays, the preset adds its templates, probes and rules.
        try:
            result = plan(
                presets.get(obj.preset),
                environment=obj.environment,
                slug=obj.slug,
                base_url=obj.base_url or None,
            )
        except PresetError as exc:
            messages.warning(request, f"Preset not applied: {exc}")
            return
        if result.changes:
            apply(result, request=request)
            messages.info(request, f"Preset {obj.preset!r}: {len(result.changes)} change(s).")


@admin.register(RequestLog)
class RequestLogAdmin(ReadOnlyAdmin):
    list_display = [
        "created", "integration", "source", "method", "path", "status", "outcome",
        "latency_ms", "error_code", "attempt",
    ]  # fmt: skip
    list_filter = ["source", "outcome", "status", "integration"]
    list_select_related = ["integration"]
    date_hierarchy = "created"
    search_fields = ["path", "error_code", "call_id"]
    paginator = NoCountPaginator
    show_full_result_count = False


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin):
    list_display = ["seq", "created", "actor", "action", "target_repr", "ip"]
    list_filter = ["action", "actor_type", "target_type"]
    search_fields = ["actor", "target_repr", "ip", "action"]
    date_hierarchy = "created"


@admin.register(RecorderLoss)
class RecorderLossAdmin(ReadOnlyAdmin):
    list_display = ["created", "rows", "reason"]

    def changelist_view(self, request, extra_context=None):
        # The number that matters is the total: it should stay 0.
        from django.db.models import Sum

        total = RecorderLoss.objects.aggregate(total=Sum("rows"))["total"] or 0
        title = f"Recorder losses: {total} request-log rows lost in total"
        return super().changelist_view(request, {**(extra_context or {}), "title": title})


@admin.register(Probe)
class ProbeAdmin(AuditedAdmin):
    form = ProbeForm
    list_display = [
        "name", "integration", "url", "interval_s", "state", "last_run_at", "last_message",
        "enabled",
    ]  # fmt: skip
    list_filter = ["state", "enabled", "integration"]
    list_select_related = ["integration"]
    search_fields = ["name", "url"]
    actions = ["run_selected_now"]
    readonly_fields = [
        "header_fingerprints_display",
        "state", "state_changed_at", "consecutive_failures", "consecutive_successes",
        "last_run_at", "last_ok", "last_reason", "last_message", "last_latency_ms",
        "cert_days_left", "cert_checked_at", "next_run_at", "claimed_until",
    ]  # fmt: skip

    @admin.display(description="Headers sent")
    def header_fingerprints_display(self, obj):
        # Secrets appear as their ${NAME} reference and a short hash, never in clear.
        rows = obj.header_fingerprints().items() if obj else ()
        return format_html_join("", "<div>{}: {}</div>", rows) or "—"

    @admin.action(description="Run now", permissions=["change"])
    def run_selected_now(self, request, queryset):
        chosen = list(queryset.select_related("integration")[: RUN_NOW_LIMIT + 1])
        if len(chosen) > RUN_NOW_LIMIT:
            self.message_user(
                request, f"Select at most {RUN_NOW_LIMIT} probes to run at once.", messages.ERROR
            )
            return
        results, busy = run_now(chosen)
        by_pk = {probe.pk: probe for probe in chosen}
        for result in results:
            probe = by_pk[result.probe_id]
            audit.record("probe.run_now", request=request, target=probe)
            verdict = "ok" if result.ok else f"failed ({result.get_reason_display()})"
            level = messages.SUCCESS if result.ok else messages.WARNING
            self.message_user(request, f"{probe}: {verdict} — {result.message}", level)
        for probe in busy:
            self.message_user(request, f"{probe}: already running; try again shortly.")


@admin.register(ProbeResult)
class ProbeResultAdmin(ReadOnlyAdmin):
    list_display = ["created", "probe", "ok", "reason", "status", "latency_ms", "message"]
    list_filter = ["ok", "reason"]
    list_select_related = ["probe__integration"]
    paginator = NoCountPaginator
    show_full_result_count = False


class AlertRuleAdminForm(AlertRuleForm):
    class Meta(AlertRuleForm.Meta):
        fields = [*AlertRuleForm.Meta.fields, "severity", "escalation_route", "escalation_minutes"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Left out (an older form, a script), a rule keeps the default severity.
        self.fields["severity"].required = False

    def clean_severity(self) -> str:
        return self.cleaned_data.get("severity") or Severity.WARNING


@admin.register(AlertRule)
class AlertRuleAdmin(AuditedAdmin):
    form = AlertRuleAdminForm
    list_display = ["name", "kind", "integration", "enabled", "repeat_interval_s"]
    list_filter = ["kind", "enabled"]


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = ["title", "state", "integration", "first_seen", "last_seen", "resolved_at"]
    list_filter = ["state", "rule__kind"]


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ["created", "alert", "kind", "recipient", "status", "attempts", "sent_at"]
    list_filter = ["status", "kind"]


@admin.register(Silence)
class SilenceAdmin(AuditedAdmin):
    list_display = ["__str__", "starts_at", "ends_at", "author", "reason"]


@admin.register(Channel)
class ChannelAdmin(AuditedAdmin):
    list_display = ["name", "kind", "enabled", "consecutive_failures", "last_error"]
    list_filter = ["kind", "enabled"]
    readonly_fields = ["failing_since", "consecutive_failures", "last_error", "admins_warned_at"]
    actions = ["send_test"]

    @admin.action(description="Send test", permissions=["change"])
    def send_test(self, request, queryset):
        from monitoring.alerts import channels

        for channel in queryset[:10]:
            result = channels.send_test(channel)
            audit.record("channel.test", request=request, target=channel)
            verdict = "delivered" if result.ok else f"failed: {result.error}"
            level = messages.SUCCESS if result.ok else messages.WARNING
            self.message_user(request, f"{channel}: {verdict}", level)


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = ["created", "alert", "channel", "event", "status", "response_code", "attempts"]
    list_filter = ["status", "event", "channel"]


@admin.register(Route)
class RouteAdmin(AuditedAdmin):
    list_display = ["name", "rule", "integration", "severity", "is_default"]
    filter_horizontal = ["channels"]


@admin.register(NotificationPreference)
class NotificationPreferenceAdmin(AuditedAdmin):
    list_display = ["user", "by_email", "severities"]
    filter_horizontal = ["integrations"]


@admin.register(MaintenanceWindow)
class MaintenanceWindowAdmin(AuditedAdmin):
    list_display = ["name", "integration", "starts_at", "ends_at", "weekday", "start_time"]


# --- accounts and roles -----------------------------------------------------------------------

User = get_user_model()
ROLE_NAMES = [role.value for role in Role]


def _superuser(request) -> bool:
    return request.user.is_active and request.user.is_superuser


def beyond_roles(user) -> bool:
    """Whether the account holds powers none of the three roles grants.

    Only a superuser may edit such an account or set its password: an Admin who could would
    sign in as it and hold those powers.
    """
    return (
        user.is_superuser
        or user.user_permissions.exists()
        or user.groups.exclude(name__in=ROLE_NAMES).exists()
    )


class UserAdmin(UpstreamAdminMixin, auth_admin.UserAdmin):
    """Accounts. Below superuser: no superuser or staff flag, no direct permissions, groups
    only among the three roles, and no edits of accounts that hold more than a role."""

    role_fieldsets = (
        (None, {"fields": ("username", "password")}),
        ("Personal info", {"fields": ("first_name", "last_name", "email")}),
        ("Role", {"fields": ("is_active", "groups")}),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )

    def get_fieldsets(self, request, obj=None):
        if obj is None or _superuser(request):
            return super().get_fieldsets(request, obj)
        return self.role_fieldsets

    def get_readonly_fields(self, request, obj=None):
        if _superuser(request):
            return super().get_readonly_fields(request, obj)
        return ("last_login", "date_joined")

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name == "groups" and not _superuser(request):
            kwargs["queryset"] = Group.objects.filter(name__in=ROLE_NAMES)
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def has_change_permission(self, request, obj=None):
        allowed = super().has_change_permission(request, obj)
        return allowed and (obj is None or _superuser(request) or not beyond_roles(obj))

    def has_delete_permission(self, request, obj=None):
        allowed = super().has_delete_permission(request, obj)
        return allowed and (obj is None or _superuser(request) or not beyond_roles(obj))

    def get_deleted_objects(self, objs, request):
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        if not _superuser(request):
            # The bulk action asks only for delete permission in general.
            perms_needed |= {f"{user} (more than a role)" for user in objs if beyond_roles(user)}
        return deleted, model_count, perms_needed, protected

    def user_change_password(self, request, id, form_url=""):
        with identity.acting(request):
            return super().user_change_password(request, id, form_url)


class GroupAdmin(UpstreamAdminMixin, auth_admin.GroupAdmin):
    """Groups are the roles, their permissions kept by roles.sync_role_permissions: changing
    them (or making new ones) is for superusers."""

    def has_add_permission(self, request):
        return _superuser(request)

    def has_change_permission(self, request, obj=None):
        return _superuser(request)

    def has_delete_permission(self, request, obj=None):
        return _superuser(request)


# --- the task queue ---------------------------------------------------------------------------


class ScheduleForm(forms.ModelForm):
    class Meta:
        model = Schedule
        fields = [
            "name", "func", "hook", "args", "kwargs", "schedule_type", "minutes", "repeats",
            "next_run", "cron", "cluster", "intended_date_kwarg",
        ]  # fmt: skip

    def clean(self):
        cleaned = super().clean()
        func = cleaned.get("func", self.instance.func)
        for field, problem in identity.schedule_problems(func, cleaned.get("hook")).items():
            if field in self.fields and field not in self.errors:
                self.add_error(field, problem)
        return cleaned


class ScheduleAdmin(AuditedAdmin, q_admin.ScheduleAdmin):
    """A schedule names the Python function the worker calls: superusers only, and only
    Upstream's own tasks (monitoring.identity.schedule_problems; also refused on save)."""

    form = ScheduleForm

    def has_add_permission(self, request):
        return _superuser(request)

    def has_change_permission(self, request, obj=None):
        return _superuser(request)

    def has_delete_permission(self, request, obj=None):
        return _superuser(request)


class TaskRecordAdmin(AuditedAdmin):
    """Finished tasks: read-only below superuser; a superuser's resubmit or delete is audited."""

    actions = ["resubmit_selected"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # every field is read-only anyway

    def has_delete_permission(self, request, obj=None):
        return _superuser(request)

    def has_resubmit_permission(self, request) -> bool:
        return _superuser(request)

    @admin.action(description="Resubmit selected tasks to queue", permissions=["resubmit"])
    def resubmit_selected(self, request, queryset):
        # A record keeps whatever func once ran, a hostile one included: only Upstream's go back.
        chosen, refused = [], []
        for task in queryset:
            (refused if identity.schedule_problems(task.func, task.hook) else chosen).append(task)
        for task in chosen:
            audit.record("task.resubmit", request=request, target=task, after={"func": task.func})
        q_admin.resubmit_task(
            self, request, self.model.objects.filter(pk__in=[t.pk for t in chosen])
        )
        for task in refused:
            self.message_user(
                request,
                f"{task.name}: {task.func} is not one of Upstream's scheduled tasks; "
                "not resubmitted.",
                messages.ERROR,
            )


class SuccessAdmin(TaskRecordAdmin, q_admin.TaskAdmin):
    pass


class FailureAdmin(TaskRecordAdmin, q_admin.FailAdmin):
    pass


class QueueAdmin(AuditedAdmin, q_admin.QueueAdmin):
    """Queued tasks: a superuser may delete one (audited); nobody edits them."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return _superuser(request)


# The stock account and task-queue admins are registered by their apps (imported above, and
# earlier in INSTALLED_APPS); these take their places.
for _model, _model_admin in [
    (User, UserAdmin),
    (Group, GroupAdmin),
    (Schedule, ScheduleAdmin),
    (Success, SuccessAdmin),
    (Failure, FailureAdmin),
    (OrmQ, QueueAdmin),  # registered only with the ORM broker
]:
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
        admin.site.register(_model, _model_admin)

# The unmapped OTLP hosts list and the webhook admin live beside the code they serve.
from monitoring import admin_hosts, admin_webhooks  # noqa: E402, F401
