"""Issue 17's fixes: alert pages, call links, free-text search, CSV/JSON export, environments."""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json

import pytest
from django.urls import reverse

from dashboard.views import logs
from monitoring.models import Alert, AlertState, Integration
from tests.dashboard.conftest import make_log, record


def _text(response) -> str:
    return html.unescape(response.content.decode())


def _body(response) -> str:
    return b"".join(response.streaming_content).decode()


@pytest.fixture
def signed_in(client, viewer):
    client.force_login(viewer)
    return client


# --- alert pagination -------------------------------------------------------------------------


def test_alert_lists_page_past_the_first_fifty(
    signed_in, integration, auth_rule, now, django_assert_max_num_queries
):
    Alert.objects.bulk_create(
        Alert(
            rule=auth_rule, integration=integration, fingerprint=f"f{n}", title=f"Alert number {n}",
            state=AlertState.RESOLVED, first_seen=now - dt.timedelta(hours=n),
            resolved_at=now - dt.timedelta(minutes=n),
        )
        for n in range(120)
    )  # fmt: skip
    url = reverse("alerts")
    with django_assert_max_num_queries(15):
        first = _text(signed_in.get(url, {"state": "resolved"}))
    assert "Alert number 0<" in first and "Alert number 49<" in first
    assert "Alert number 50<" not in first
    assert "Page 1 of 3" in first and "page=2" in first
    third = _text(signed_in.get(url, {"state": "resolved", "page": "3"}))
    assert "Alert number 119<" in third and "Alert number 0<" not in third
    # Out of range or not a number: the nearest real page, never an error.
    assert "Page 3 of 3" in _text(signed_in.get(url, {"state": "resolved", "page": "999"}))
    assert "Page 1 of 3" in _text(signed_in.get(url, {"state": "resolved", "page": "x"}))


# --- call id ----------------------------------------------------------------------------------


def test_a_call_id_links_to_every_attempt_of_that_call(signed_in, integration, stripe, now):
    rows = record(
        [
            make_log(
                integration, now - dt.timedelta(seconds=3), call_id="c1", attempt=1, status=503
            ),
            make_log(
                integration, now - dt.timedelta(seconds=2), call_id="c1", attempt=2, status=503
            ),
            make_log(integration, now - dt.timedelta(seconds=1), call_id="c1", attempt=3),
            make_log(integration, now, call_id="c2"),
            make_log(stripe, now, call_id="c1"),  # another integration's call id
        ]
    )
    entry = _text(signed_in.get(reverse("request_log_entry", args=[rows[0].pk])))
    link = logs.call_link(rows[0])
    assert "all attempts of this call" in entry and html.unescape(link) in entry
    page = signed_in.get(link)
    shown = [r.pk for r in page.context["rows"]]
    assert shown == [rows[2].pk, rows[1].pk, rows[0].pk]
    # The list links the retries too.
    assert "try 2" in _text(signed_in.get(reverse("request_log")))


# --- search -----------------------------------------------------------------------------------


def test_free_text_search_finds_path_error_code_and_message(signed_in, integration, now):
    record(
        [
            make_log(integration, now, path="/v1/invoices/{id}"),
            make_log(integration, now, status=401, error_code="token_expired"),
            make_log(integration, now, status=500, error_message="Upstream Database Exploded"),
            make_log(integration, now, path="/v1/other"),
        ]
    )
    url = reverse("request_log")

    def found(q):
        return sorted(
            r.path + "|" + r.error_code for r in signed_in.get(url, {"q": q}).context["rows"]
        )

    assert found("invoices") == ["/v1/invoices/{id}|"]
    assert found("TOKEN_exp") == ["/v1/messages/{id}|token_expired"]
    assert found("database exploded") == ["/v1/messages/{id}|"]
    assert found("nothing-like-it") == []
    response = signed_in.get(url, {"q": "x" * 201})
    assert response.status_code == 400


# --- export -----------------------------------------------------------------------------------


def test_csv_export_streams_the_filtered_rows_in_utc(signed_in, integration, stripe, now):
    when = dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.UTC)
    record(
        [
            make_log(integration, when, status=401, error_code="bad_key", call_id="k1"),
            make_log(integration, when, status=200),
            make_log(stripe, when, status=401, error_code="=HYPERLINK(1)"),
        ]
    )
    window = {"since": "2026-07-01T11:00", "until": "2026-07-01T13:00", "status": "401"}
    response = signed_in.get(reverse("request_log_export"), window)
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(_body(response))))
    assert sorted(r["integration"] for r in rows) == ["paubox", "stripe"]
    paubox = next(r for r in rows if r["integration"] == "paubox")
    assert paubox["time"] == "2026-07-01T12:00:00+00:00"
    assert (paubox["error_code"], paubox["call_id"], paubox["status"]) == ("bad_key", "k1", "401")
    # A formula is defused for spreadsheets.
    assert next(r for r in rows if r["integration"] == "stripe")["error_code"] == "'=HYPERLINK(1)"


def test_json_export_is_a_list_of_objects(signed_in, integration, now):
    record([make_log(integration, now - dt.timedelta(minutes=n)) for n in range(3)])
    response = signed_in.get(reverse("request_log_export"), {"format": "json", "range": "1h"})
    assert response["Content-Type"] == "application/json"
    data = json.loads(_body(response))
    assert len(data) == 3 and data[0]["path"] == "/v1/messages/{id}"
    assert set(data[0]) == set(logs.EXPORT_COLUMNS)


def test_the_export_stops_at_its_bound(signed_in, integration, now, monkeypatch):
    monkeypatch.setattr(logs, "EXPORT_MAX", 5)
    record([make_log(integration, now - dt.timedelta(seconds=n)) for n in range(12)])
    data = json.loads(_body(signed_in.get(reverse("request_log_export"), {"format": "json"})))
    assert len(data) == 5


def test_the_export_refuses_bad_filters_with_a_400(signed_in, db):
    url = reverse("request_log_export")
    assert signed_in.get(url, {"format": "xml"}).status_code == 400
    assert (
        signed_in.get(url, {"since": "2026-01-01T00:00", "until": "2026-05-01T00:00"}).status_code
        == 400
    )


def test_the_export_needs_a_role(client, outsider, db):
    url = reverse("request_log_export")
    assert client.get(url)["Location"].startswith(reverse("login"))
    client.force_login(outsider)
    assert client.get(url).status_code == 403


def test_the_log_page_links_the_export_with_its_filters(signed_in, integration, now):
    record([make_log(integration, now)])
    body = _text(signed_in.get(reverse("request_log"), {"q": "messages"}))
    assert f"{reverse('request_log_export')}?q=messages&range=24h&format=csv" in body


# --- environments on the overview ---------------------------------------------------------------


def test_the_overview_filters_and_groups_by_environment(signed_in, now):
    for env in ("production", "staging"):
        integ = Integration.objects.create(name=f"Mail {env}", slug="mail", environment=env)
        record([make_log(integ, now)])
    body = _text(signed_in.get(reverse("overview")))
    assert "Mail production" in body and "Mail staging" in body
    assert "Production" in body and "Staging" in body  # one group per environment
    body = _text(signed_in.get(reverse("overview"), {"env": "staging"}))
    assert "Mail staging" in body and "Mail production" not in body
