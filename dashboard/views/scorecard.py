"""The scorecard screen: an integration graded against its guides' best practices."""

from __future__ import annotations

from datetime import timedelta

from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from dashboard.access import role_required
from monitoring import scorecard
from monitoring.models import Integration
from monitoring.roles import Action

#: The page shows the stored scorecard (the hourly task refreshes it); older than this, it
#: is computed again on the spot (bounded: buckets plus a sample).
FRESH_FOR = timedelta(hours=2)


@require_GET
@role_required(Action.VIEW)
def scorecard_page(request, pk: int):
    integration = get_object_or_404(Integration, pk=pk)
    report = scorecard.latest(integration, max_age=FRESH_FOR)
    counts = {grade: 0 for grade in ("pass", "warn", "fail", "unknown")}
    for result in report.results:
        counts[result.grade] = counts.get(result.grade, 0) + 1
    return render(
        request,
        "dashboard/scorecard.html",
        {"integration": integration, "report": report, "counts": counts},
    )
