"""Overview and integration pages: verdicts, charts, partial swaps, bounded queries."""

from __future__ import annotations

import datetime as dt
import html
import json
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from monitoring.models import Integration, ProbeState
from tests.dashboard.conftest import make_log, record, traffic

# Queries one page may make, whatever the number of integrations or rows: session, user,
# roles, nav badge, integrations, two reads per piece of each metrics call, probes, alerts.
# 15 and 23 at most times of day; a window summary reads up to five pieces (minutes, hours,
# days at each edge), two queries each, which bounds the worst case at these.
MAX_QUERIES = {"overview": 21, "integration": 35}


def chart(response, name: str) -> dict:
    match = re.search(
        rf'<script id="data-{name}" type="application/json">(.*?)</script>',
        response.content.decode(),
        re.S,
    )
    assert match, f"no chart data for {name}"
    return json.loads(match.group(1))


@pytest.fixture
def signed_in(client, viewer):
    client.force_login(viewer)
    return client


def test_the_overview_gives_each_integration_a_verdict(signed_in, busy, stripe, probe, now):
    # Stripe: probes pass, but the last 15 minutes of our calls are mostly 401s.
    stripe.probes.create(name="Health", url="https://api.stripe.com/health", state=ProbeState.UP)
    record([make_log(stripe, now - dt.timedelta(minutes=m), status=401) for m in range(1, 11)])
    body = signed_in.get(reverse("overview")).content.decode()
    stripe_card = body[body.index(f'id="card-{stripe.pk}"') :]
    assert "Our calls failing" in stripe_card[:1500]
    assert "Paubox" in body and "Stripe" in body
    assert re.search(r"<dd>60 req</dd>", body)  # the busy integration's hour of calls


def test_the_overview_draws_failed_auth_per_integration_with_alert_markers(
    signed_in, busy, firing_alert
):
    payload = chart(signed_in.get(reverse("overview")), "auth")
    assert payload["series"][0]["label"] == "Paubox"
    assert sum(payload["series"][0]["data"]) == 6  # every tenth call was a 401
    assert payload["markers"] and payload["markers"][0]["text"].startswith("Alert: Paubox")


def test_the_time_range_is_kept_in_the_url(signed_in, busy):
    body = signed_in.get(reverse("overview") + "?range=7d").content.decode()
    assert re.search(r'href="/\?range=7d"[^>]*aria-current="true"', body)
    assert "figures the last 7 d" in body


def test_an_unknown_range_is_a_400_that_says_why(signed_in):
    response = signed_in.get(reverse("overview") + "?range=2y")
    assert response.status_code == 400
    assert b"2y is not one of the available choices" in response.content


def test_htmx_gets_the_live_partial_and_history_restores_get_the_page(signed_in, busy):
    url = reverse("overview") + "?range=1h"
    partial = signed_in.get(url, HTTP_HX_REQUEST="true")
    assert partial.status_code == 200
    text = partial.content.decode()
    assert text.lstrip().startswith('<div id="live"') and "<html" not in text
    assert "HX-Request" in partial["Vary"]
    restore = signed_in.get(url, HTTP_HX_REQUEST="true", HTTP_HX_HISTORY_RESTORE_REQUEST="true")
    assert "<html" in restore.content.decode()
    full = signed_in.get(url)
    assert "<html" in full.content.decode() and "HX-Request" in full["Vary"]


def test_the_live_region_refreshes_itself_through_its_own_url(signed_in, busy):
    text = signed_in.get(reverse("overview") + "?range=1h", HTTP_HX_REQUEST="true").content.decode()
    head = text[: text.index(">")]
    assert 'hx-get="/?range=1h"' in head and 'hx-trigger="refresh"' in head
    assert "data-refresh" in head


def test_an_empty_install_shows_how_to_send_calls(signed_in):
    body = signed_in.get(reverse("overview")).content.decode()
    assert "No integrations yet" in body and "MonitoredClient(" in body


def _queries(client, url) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx.captured_queries)


def test_the_overview_makes_the_same_few_queries_for_one_or_many_integrations(signed_in, busy, now):
    url = reverse("overview")
    signed_in.get(url)  # warm the session
    one = _queries(signed_in, url)
    for n in range(5):
        extra = Integration.objects.create(name=f"Extra {n}", slug=f"extra-{n}")
        traffic(extra, now, calls=10)
    many = _queries(signed_in, url)
    assert one == many
    assert many <= MAX_QUERIES["overview"]


def test_the_integration_page_draws_every_chart(signed_in, busy, probe, now):
    response = signed_in.get(reverse("integration", args=[busy.pk]) + "?range=1h")
    assert response.status_code == 200
    traffic_chart = chart(response, "traffic")
    assert traffic_chart["kind"] == "bars"
    assert sum(traffic_chart["series"][0]["data"]) == 60 - 6 - 4 - 1  # OK calls
    assert any(v is not None for v in chart(response, "latency")["series"][1]["data"])
    assert sum(chart(response, "auth")["series"][0]["data"]) == 6
    limits = chart(response, "ratelimit")["series"][1]["data"]
    assert 1000 in limits


def test_the_integration_page_lists_endpoints_and_groups_recent_errors(signed_in, busy):
    body = signed_in.get(reverse("integration", args=[busy.pk])).content.decode()
    assert "GET /v1/messages/{id}" in body
    errors = body[body.index("Recent errors") :]
    assert re.search(r"invalid_api_key</a>.*?<td class=\"num\">6</td>", errors, re.S)
    assert re.search(r"unavailable</a>.*?<td class=\"num\">4</td>", errors, re.S)
    assert "error_code=invalid_api_key" in errors  # links into the request log


def test_a_deprecated_endpoint_shows_its_sunset_countdown(signed_in, integration, now):
    record(
        [
            make_log(
                integration,
                now - dt.timedelta(minutes=5),
                path="/v1/templates",
                deprecated=True,
                sunset_at=now + dt.timedelta(days=23, hours=1),
                deprecation_link="https://docs.example.com/sunset",
            )
        ]
    )
    body = signed_in.get(reverse("integration", args=[integration.pk])).content.decode()
    notice = body[body.index("Deprecated endpoints") :]
    assert "GET /v1/templates" in notice
    assert "Sunset in 23 d" in notice
    assert "https://docs.example.com/sunset" in notice


def test_open_alerts_appear_on_their_integration(signed_in, busy, firing_alert):
    body = signed_in.get(reverse("integration", args=[busy.pk])).content.decode()
    assert f'id="alert-{firing_alert.pk}"' in body


def test_an_integration_without_traffic_teaches_the_client_snippet(signed_in, stripe):
    body = html.unescape(signed_in.get(reverse("integration", args=[stripe.pk])).content.decode())
    assert "No calls in the last 24 h" in body
    assert 'MonitoredClient(integration="stripe", environment="production"' in body
    assert 'base_url="https://api.stripe.com"' in body


def test_the_integration_page_queries_do_not_grow_with_traffic(signed_in, busy, probe, now):
    url = reverse("integration", args=[busy.pk])
    signed_in.get(url)
    before = _queries(signed_in, url)
    traffic(busy, now - dt.timedelta(minutes=1), calls=300)
    after = _queries(signed_in, url)
    assert before == after
    assert after <= MAX_QUERIES["integration"]


def test_an_unknown_integration_is_a_404(signed_in):
    assert signed_in.get(reverse("integration", args=[999])).status_code == 404


# --- The overview at many integrations ---------------------------------------------------


def _many(n: int, now, *, env: str = "production") -> list[Integration]:
    made = Integration.objects.bulk_create(
        Integration(name=f"Api {k:04d}", slug=f"api-{env}-{k}", environment=env) for k in range(n)
    )
    return list(Integration.objects.filter(slug__in=[i.slug for i in made]).order_by("name"))


def _failing(integration, now) -> None:
    record([make_log(integration, now - dt.timedelta(minutes=m), status=500) for m in range(1, 9)])


def test_integrations_needing_attention_come_first_as_cards_and_the_rest_as_rows(
    signed_in, now, stripe
):
    quiet = _many(3, now)
    _failing(stripe, now)
    body = signed_in.get(reverse("overview")).content.decode()
    assert f'id="card-{stripe.pk}"' in body
    assert "Needs attention" in body
    for i in quiet:
        assert f'id="row-{i.pk}"' in body and f'id="card-{i.pk}"' not in body
    assert body.index(f'id="card-{stripe.pk}"') < body.index(f'id="row-{quiet[0].pk}"')


def test_an_integration_with_an_open_alert_needs_attention(signed_in, busy, firing_alert):
    body = signed_in.get(reverse("overview")).content.decode()
    assert f'id="card-{busy.pk}"' in body


def test_the_overview_pages_the_healthy_rest_and_keeps_filters_in_the_links(signed_in, now):
    from dashboard.views.health import PAGE_SIZE

    made = _many(PAGE_SIZE + 5, now, env="staging")
    first = signed_in.get(reverse("overview") + "?range=7d&env=staging").content.decode()
    assert first.count('id="row-') == PAGE_SIZE
    assert "Page 1 of 2" in first
    assert 'href="?range=7d&amp;env=staging&amp;page=2"' in first
    second = signed_in.get(reverse("overview") + "?range=7d&env=staging&page=2").content.decode()
    assert second.count('id="row-') == 5
    assert f'id="row-{made[-1].pk}"' in second
    # A page past the end shows the last one rather than nothing.
    assert (
        "Page 2 of 2" in signed_in.get(reverse("overview") + "?env=staging&page=9").content.decode()
    )


def test_the_overview_filters_by_environment_and_name(signed_in, now, stripe):
    _many(2, now, env="sandbox")
    body = signed_in.get(reverse("overview") + "?env=sandbox").content.decode()
    assert body.count('id="row-') == 2 and "Stripe" not in body.split("</form>", 1)[1]
    body = signed_in.get(reverse("overview") + "?q=stri").content.decode()
    assert f'id="row-{stripe.pk}"' in body and body.count('id="row-') == 1
    body = signed_in.get(reverse("overview") + "?q=nothing-like-it").content.decode()
    assert "No integration matches" in body and "No integrations yet" not in body


@pytest.mark.parametrize("query", ["env=mars", "page=0", "page=x", "q=" + "x" * 101])
def test_bad_overview_filters_are_a_400(signed_in, query):
    assert signed_in.get(reverse("overview") + "?" + query).status_code == 400


def test_overview_queries_stay_constant_from_ten_to_two_hundred_integrations(signed_in, now):
    url = reverse("overview") + "?range=24h"
    few = _many(10, now)
    _failing(few[0], now)
    for i in few[1:4]:
        traffic(i, now, calls=10)
    signed_in.get(url)
    small = _queries(signed_in, url)
    more = _many(190, now, env="staging")
    _failing(more[0], now)
    for i in more[1:20]:
        traffic(i, now, calls=10)
    large = _queries(signed_in, url)
    assert small == large <= MAX_QUERIES["overview"]


def test_the_overview_at_many_integrations_stays_small(signed_in, now):
    _many(300, now)
    response = signed_in.get(reverse("overview"))
    assert response.status_code == 200
    assert len(response.content) < 200_000
