"""Alert channels: the list with each one's health, "Send test", and the editor for Admins."""

from __future__ import annotations

from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from dashboard.access import role_required
from dashboard.channel_form import ChannelForm
from dashboard.views import is_partial
from monitoring import audit
from monitoring.alerts import channels
from monitoring.models import Channel, Route
from monitoring.roles import Action


@require_GET
@role_required(Action.VIEW)
def channel_list(request):
    rows = list(Channel.objects.prefetch_related("routes"))
    for channel in rows:
        channel.shown = channels.kind_of(channel).shown()
        channel.is_failing = channel.consecutive_failures >= channels.FAILING_AFTER
    context = {
        "channels": rows,
        "routes": list(
            Route.objects.select_related("rule", "integration").prefetch_related("channels")
        ),
        "nav": "channels",
    }
    return render(request, "dashboard/channels.html", context)


@require_POST
@role_required(Action.CONFIGURE)
def channel_test(request, pk: int):
    """Deliver a sample alert now and show the outcome in place (the whole page without HTMX)."""
    channel = get_object_or_404(Channel, pk=pk)
    result = channels.send_test(channel)
    audit.record(
        "channel.test",
        request=request,
        target=channel,
        after={"ok": result.ok, "code": result.code},
    )
    context = {"channel": channel, "result": result}
    if is_partial(request):
        return render(request, "dashboard/_channel_test.html", context)
    return render(request, "dashboard/channel_test.html", context | {"nav": "channels"})


@require_http_methods(["GET", "POST"])
@role_required(Action.CONFIGURE)
def channel_edit(request, pk: int | None = None):
    """Create or edit a channel with one field per setting of its kind."""
    channel = get_object_or_404(Channel, pk=pk) if pk else None
    form = ChannelForm(request.POST or None, instance=channel)
    if request.method == "POST" and form.is_valid():
        before = audit.snapshot(channel) if channel is not None else None
        saved = form.save()
        audit.record_change(request, saved, before)
        return redirect("channels")
    status = 400 if request.method == "POST" else 200
    context = {"form": form, "channel": channel, "nav": "channels"}
    return render(request, "dashboard/channel_form.html", context, status=status)


@require_http_methods(["GET", "POST"])
@role_required(Action.CONFIGURE)
def channel_delete(request, pk: int):
    """Confirm, then delete; its routes lose it (a route with no channel sends nothing)."""
    channel = get_object_or_404(Channel, pk=pk)
    if request.method == "POST":
        before = audit.snapshot(channel)
        channel.delete()
        audit.record_change(request, channel, before, deleted=True)
        return redirect("channels")
    routes = list(channel.routes.all())
    context = {"channel": channel, "routes": routes, "nav": "channels"}
    return render(request, "dashboard/channel_delete.html", context)
