"""Dashboard screens."""

from __future__ import annotations

from django.shortcuts import render
from django.views.decorators.http import require_GET

from dashboard.access import role_required
from monitoring.models import Integration
from monitoring.roles import Action


@require_GET
@role_required(Action.VIEW)
def overview(request):
    integrations = Integration.objects.filter(active=True).order_by("name", "environment")
    return render(request, "dashboard/overview.html", {"integrations": integrations})
