"""Alert channels: the list with each one's health, and "Send test" for Admins."""

from __future__ import annotations

from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET, require_POST

from dashboard.access import role_required
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
