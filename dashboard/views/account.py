"""Settings screens: maintenance windows and API keys (Admins), and everyone's own profile."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from api.management.commands.create_api_key import create_key
from api.models import ApiKey
from dashboard.access import role_required
from dashboard.forms_config import WEEKDAYS, ApiKeyForm, MaintenanceForm, ProfileForm
from dashboard.middleware import ZONE_SESSION_KEY
from dashboard.views import bad_input, render_page
from monitoring import audit
from monitoring.models import MaintenanceWindow, NotificationPreference
from monitoring.roles import Action

LIST_PAGE = 50


def _page(request, qs):
    """One page of a list; a bad ?page= shows the first or last page, never an error."""
    return Paginator(qs, LIST_PAGE).get_page(request.GET.get("page"))


# --- Maintenance windows ---------------------------------------------------------------------


def _window_state(window: MaintenanceWindow, now) -> str:
    if window.starts_at is None:
        return "weekly"
    if window.ends_at <= now:
        return "ended"
    return "active" if window.starts_at <= now else "upcoming"


@require_http_methods(["GET", "POST"])
@role_required(Action.CONFIGURE)
def maintenance_list(request):
    form = MaintenanceForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            with transaction.atomic():
                window = form.save()
                audit.record_change(request, window, None)
            return redirect("maintenance")
        status = 400
    now = timezone.now()
    page = _page(
        request,
        MaintenanceWindow.objects.select_related("integration").order_by("-created", "-id"),
    )
    days = dict(WEEKDAYS)
    for window in page:
        window.state = _window_state(window, now)
        if window.weekday is not None and window.start_time is not None:
            window.weekly_text = (
                f"{days.get(window.weekday, '?')} at {window.start_time:%H:%M} UTC "
                f"for {window.duration_minutes} min"
            )
    context = {"form": form, "page": page, "nav": "maintenance"}
    return render_page(request, "dashboard/maintenance.html", context, status=status)


@require_POST
@role_required(Action.CONFIGURE)
def maintenance_end(request, pk: int):
    """End a running one-off window now; cancel (delete) an upcoming or a weekly one."""
    window = get_object_or_404(MaintenanceWindow, pk=pk)
    now = timezone.now()
    state = _window_state(window, now)
    if state == "ended":
        return bad_input(request, "This maintenance window has already ended.")
    before = audit.snapshot(window)
    with transaction.atomic():
        if state == "active":
            window.ends_at = now
            window.save(update_fields=["ends_at"])
            audit.record_change(request, window, before, fields=["ends_at"])
        else:
            audit.record_change(request, window, before, deleted=True)
            window.delete()
    return redirect("maintenance")


# --- API keys --------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@role_required(Action.CONFIGURE)
def api_key_list(request):
    """The keys, and a form making one; the new key is shown on this response only."""
    form = ApiKeyForm(request.POST or None)
    status, created, key = 200, None, ""
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            created, key = create_key(
                name=data["name"],
                scopes=data["scopes"],
                integrations=list(data["integrations"]),
                allow_create=data["allow_create"],
                request=request,
            )
            form = ApiKeyForm()
        else:
            status = 400
    page = _page(
        request,
        ApiKey.objects.select_related("created_by")
        .prefetch_related("integrations")
        .order_by("revoked", "-created", "-id"),
    )
    context = {"form": form, "page": page, "created": created, "key": key, "nav": "api_keys"}
    # A response holding a key must not be kept by anything (the middleware adds no-store
    # for signed-in pages; this says it for this page whatever else changes).
    response = render_page(request, "dashboard/api_keys.html", context, status=status)
    response["Cache-Control"] = "private, no-store"
    return response


@require_POST
@role_required(Action.CONFIGURE)
def api_key_revoke(request, pk: int):
    key = get_object_or_404(ApiKey, pk=pk)
    # A filtered update: two Admins revoking at once write one audit row.
    with transaction.atomic():
        if ApiKey.objects.filter(pk=key.pk, revoked__isnull=True).update(revoked=timezone.now()):
            audit.record(
                "api_key.revoke",
                request=request,
                target=key,
                after={"prefix": key.prefix, "name": key.name},
            )
    return redirect("api_keys")


# --- Profile ---------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@role_required(Action.VIEW)
def profile(request):
    pref = NotificationPreference.objects.filter(user=request.user).first()
    instance = pref or NotificationPreference(user=request.user)
    before = audit.snapshot(pref) if pref is not None else None
    before_email = request.user.email
    form = ProfileForm(request.POST or None, instance=instance, user=request.user)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            with transaction.atomic():
                saved = form.save()
                audit.record_change(request, saved, before)
                if before_email != request.user.email:
                    audit.record(
                        audit.Actions.UPDATE,
                        request=request,
                        target=request.user,
                        before={"email": before_email},
                        after={"email": request.user.email},
                    )
            request.session[ZONE_SESSION_KEY] = saved.time_zone
            return redirect("profile")
        status = 400
    context = {"form": form, "nav": "profile"}
    return render_page(request, "dashboard/profile.html", context, status=status)
