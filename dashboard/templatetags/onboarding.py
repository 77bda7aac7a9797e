"""{% onboarding_checklist %}: the newcomer's checklist where the overview includes it."""

from __future__ import annotations

from django import template

from dashboard import onboarding

register = template.Library()


@register.inclusion_tag("dashboard/_onboarding.html", takes_context=True)
def onboarding_checklist(context):
    request = context["request"]
    return {
        "onboarding": onboarding.checklist(request),
        "can_configure": context.get("can_configure"),
        "csrf_token": context.get("csrf_token"),
        "request": request,
    }
