"""The request log explorer: validated filters, keyset pages, a row's detail, redaction kept."""

from __future__ import annotations

import datetime as dt
import html
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from dashboard.views.logs import PAGE_SIZE
from tests.dashboard.conftest import make_log, record

URL = "/requests/"


@pytest.fixture
def signed_in(client, viewer):
    client.force_login(viewer)
    return client


def row_ids(response) -> list[int]:
    return [int(i) for i in re.findall(r'hx-target="#detail-(\d+)"', response.content.decode())]


def more_link(response) -> str | None:
    match = re.search(r'<tr id="more".*?href="([^"]+)"', response.content.decode(), re.S)
    return match.group(1).replace("&amp;", "&") if match else None


@pytest.fixture
def many(integration, now):
    """130 rows, several sharing a timestamp so paging must break ties by id."""
    rows = []
    for n in range(130):
        created = now - dt.timedelta(seconds=(n // 3) * 10 + 5)
        fields = {"status": 401, "error_code": "invalid_api_key"} if n % 5 == 0 else {}
        rows.append(make_log(integration, created, **fields))
    return record(rows)


def test_pages_walk_the_window_newest_first_without_gaps_or_repeats(signed_in, many):
    seen, url, pages = [], URL, 0
    while url:
        response = signed_in.get(url)
        assert response.status_code == 200
        seen += row_ids(response)
        url, pages = more_link(response), pages + 1
    assert pages == 3
    assert len(seen) == len(set(seen)) == 130
    created = dict(
        (r.pk, r.created) for r in type(many[0]).objects.filter(pk__in=seen).only("created")
    )
    order = [(created[pk], pk) for pk in seen]
    assert order == sorted(order, reverse=True)


def test_load_more_over_htmx_returns_only_the_next_rows(signed_in, many):
    first = signed_in.get(URL)
    assert len(row_ids(first)) == PAGE_SIZE
    nxt = signed_in.get(more_link(first), HTTP_HX_REQUEST="true", HTTP_HX_TARGET="more")
    text = nxt.content.decode()
    assert "<table" not in text and "<html" not in text
    assert len(row_ids(nxt)) == PAGE_SIZE
    assert not set(row_ids(nxt)) & set(row_ids(first))
    assert 'id="more"' in text  # and a link to the page after


def test_the_filter_form_over_htmx_returns_the_result_block(signed_in, many):
    response = signed_in.get(URL + "?status=401", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="results")
    text = response.content.decode()
    assert text.lstrip().startswith('<section id="results"')
    assert len(row_ids(response)) == 26
    assert "HX-Request" in response["Vary"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=401", 26),
        ("error_code=invalid_api_key", 26),
        ("outcome=failed", 26),
        ("outcome=ok", 104),
        ("method=POST", 0),
        ("path=/v1/messages/{id}", 130),
        ("source=probe", 0),
    ],
)
def test_each_filter_narrows_the_rows(signed_in, many, query, expected):
    seen, url = [], f"{URL}?{query}"
    while url:
        response = signed_in.get(url)
        seen += row_ids(response)
        url = more_link(response)
    assert len(seen) == expected


def test_the_window_is_required_and_bounded(signed_in, integration, now):
    old = record([make_log(integration, now - dt.timedelta(hours=30))])[0]
    assert old.pk not in row_ids(signed_in.get(URL))  # default: last 24 h
    assert old.pk in row_ids(signed_in.get(URL + "?range=7d"))
    since = (now - dt.timedelta(hours=31)).strftime("%Y-%m-%dT%H:%M")
    until = (now - dt.timedelta(hours=29)).strftime("%Y-%m-%dT%H:%M")
    assert row_ids(signed_in.get(f"{URL}?since={since}&until={until}")) == [old.pk]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=999", "Status: Ensure this value is less than or equal to 599."),
        ("status=abc", "Status: Enter a whole number."),
        ("range=1y", "Select a valid choice"),
        ("path=v1/users", "A path template starts with /"),
        ("after=not-a-cursor", "This is not a position in the log."),
        ("since=2026-03-02T00:00&until=2026-03-01T00:00", "“From” must be before “To”."),
        ("since=2026-01-01T00:00&until=2026-03-01T00:00", "at most 31 days"),
        ("integration=99999", "Select a valid choice"),
        ("until=0001-01-01T00:00", "To (UTC): Choose a time in the years 2000 to 2099."),
        ("since=9999-12-31T23:59", "From (UTC): Choose a time in the years 2000 to 2099."),
    ],
)
def test_bad_filters_are_a_400_with_a_message(signed_in, query, message):
    response = signed_in.get(f"{URL}?{query}")
    assert response.status_code == 400
    assert message in html.unescape(response.content.decode())
    partial = signed_in.get(f"{URL}?{query}", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="results")
    assert partial.status_code == 400
    assert "That didn’t work." in partial.content.decode()


def test_the_explorer_never_counts_the_table(signed_in, many):
    with CaptureQueriesContext(connection) as ctx:
        signed_in.get(URL + "?status=401")
    log_queries = [q["sql"] for q in ctx.captured_queries if "monitoring_requestlog" in q["sql"]]
    assert len(log_queries) == 1
    assert "COUNT(" not in log_queries[0].upper()
    assert "LIMIT 51" in log_queries[0]


def test_a_row_opens_its_detail_and_redacted_values_stay_redacted(signed_in, integration, now):
    row = record(
        [
            make_log(
                integration,
                now,
                status=401,
                query="api_key=[redacted]&page=2",
                error_code="invalid_api_key",
                error_body='{"error": "bad key", "token": "[redacted]"}',
                ratelimit_limit=100,
                ratelimit_remaining=7,
            )
        ]
    )[0]
    url = reverse("request_log_entry", args=[row.pk])
    fragment = signed_in.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in fragment
    assert "?api_key=[redacted]&amp;page=2" in fragment
    assert "&quot;token&quot;: &quot;[redacted]&quot;" in fragment
    assert "7 left of 100 req" in fragment
    page = signed_in.get(url).content.decode()
    assert "<html" in page and "GET /v1/messages/{id}" in page


def test_an_unknown_row_is_a_404(signed_in):
    assert signed_in.get(reverse("request_log_entry", args=[12345])).status_code == 404


def test_a_position_survives_the_round_trip_to_the_microsecond():
    from django.core.exceptions import ValidationError

    from dashboard.forms import decode_cursor, encode_cursor

    when = dt.datetime(2026, 3, 1, 12, 0, 0, 999_999, tzinfo=dt.UTC)
    assert decode_cursor(encode_cursor(when, 42)) == (when, 42)
    with pytest.raises(ValidationError, match="not a position"):
        decode_cursor("99999999999999999999.1")
