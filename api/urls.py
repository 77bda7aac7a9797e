"""The machine-facing URL map: /api/v1/… (OTLP's /otlp/… joins here)."""

from __future__ import annotations

from django.urls import path, re_path

from api import config, events, openapi, read, views_hooks, views_otlp

app_name = "api"

urlpatterns = [
    # First: webhook deliveries are the busiest URL and come from outside, as fast as a
    # provider sends; the prefixes here never overlap, so the order changes nothing else.
    re_path(r"^hooks/(?P<token>[^/]+)/?$", views_hooks.receive, name="hook"),
    path("api/v1/events", events.ingest, name="events"),
    path("api/v1/integrations", read.integrations, name="integrations"),
    path("api/v1/integrations/<str:slug>/summary", read.summary, name="summary"),
    path("api/v1/integrations/<str:slug>/scorecard", read.scorecard, name="scorecard"),
    path("api/v1/alerts", read.alerts, name="alerts"),
    path("api/v1/config", config.document, name="config"),
    path("api/v1/openapi.json", openapi.document, name="openapi"),
    path("api/v1/schema/events.json", openapi.events_schema, name="events_schema"),
    path("otlp/v1/traces", views_otlp.traces, name="otlp_traces"),
]
