"""The scorecard section other pages show (the integration page)."""

from __future__ import annotations

from django import template

from monitoring.models import Scorecard

register = template.Library()


@register.inclusion_tag("dashboard/_scorecard_section.html")
def scorecard_section(integration):
    """The newest stored scorecard's grade and the checks that need attention (one query;
    never computed here: the hourly task and the scorecard page do that)."""
    row = Scorecard.objects.filter(integration=integration).order_by("-computed_at").first()
    report = row.report() if row is not None else None
    attention = [r for r in report.results if r.grade in ("fail", "warn")] if report else []
    attention.sort(key=lambda r: r.grade != "fail")
    return {"integration": integration, "report": report, "attention": attention[:5]}
