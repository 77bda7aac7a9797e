"""Django admin: configuration (audited), request logs and the audit log (read-only)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.utils.functional import cached_property
from django.utils.html import format_html_join

from monitoring import audit, probes
from monitoring.forms import ProbeForm
from monitoring.models import (
    Alert,
    AlertRule,
    AuditLog,
    Integration,
    MaintenanceWindow,
    Notification,
    Probe,
    ProbeResult,
    RecorderLoss,
    RequestLog,
    Silence,
)
from monitoring.rule_forms import AlertRuleForm

# The admin's run-now action waits for the runs; keep one request bounded.
RUN_NOW_LIMIT = 20


class AuditedAdmin(admin.ModelAdmin):
    """Every create, update and delete made through the admin lands in the audit log."""

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

    def delete_model(self, request, obj):
        before = audit.snapshot(obj)
        audit.record_change(request, obj, before, deleted=True)
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            audit.record_change(request, obj, audit.snapshot(obj), deleted=True)
        super().delete_queryset(request, queryset)


class ReadOnlyAdmin(admin.ModelAdmin):
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


@admin.register(Integration)
class IntegrationAdmin(AuditedAdmin):
    list_display = ["name", "environment", "slug", "base_url", "owner_email", "active"]
    list_filter = ["environment", "active"]
    search_fields = ["name", "slug", "base_url"]
    prepopulated_fields = {"slug": ["name"]}


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
        results, busy = probes.run_now(chosen)
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


@admin.register(AlertRule)
class AlertRuleAdmin(AuditedAdmin):
    form = AlertRuleForm
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


@admin.register(MaintenanceWindow)
class MaintenanceWindowAdmin(AuditedAdmin):
    list_display = ["name", "integration", "starts_at", "ends_at", "weekday", "start_time"]
