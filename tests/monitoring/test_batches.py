"""Bulk batches: the caller counts a batch's items, the writer stores the count and flags a
Paubox bulk over the advised 50 without failing it; the request log and scorecard show it."""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from api.models import ApiKey
from demo.sandbox.personalities import PAUBOX_KEY, PAUBOX_USER
from monitoring import attempts, hostmap, recorder, scorecard
from monitoring.attempts import Attempt
from monitoring.client import MonitoredClient
from monitoring.models import Integration, Outcome, RequestLog

EVENTS = "/api/v1/events"
BULK = "https://api.paubox.net/v1/acme/bulk_messages"


@pytest.fixture(autouse=True)
def _fresh_policies():
    """Integration ids are reused once the test database is emptied: forget cached policies
    (and OTLP's host map) before and after, so neither this file nor the next sees stale ones."""
    attempts.clear_policies()
    hostmap.clear()
    yield
    attempts.clear_policies()
    hostmap.clear()


@pytest.fixture
def paubox(db) -> Integration:
    return Integration.objects.create(
        name="Paubox",
        slug="paubox",
        environment="production",
        base_url="https://api.paubox.net/v1/acme",
        preset="paubox",
    )


@pytest.fixture
def key(db) -> str:
    return ApiKey.issue(name="svc", scopes=["ingest"])[1]


def event(**fields) -> dict:
    base = {
        "integration": "paubox",
        "environment": "production",
        "method": "POST",
        "url": BULK,
        "status": 200,
        "latency_ms": 40.0,
    }
    return {**base, **fields}


def ingest(client, key: str, *events: dict) -> dict:
    response = client.post(
        EVENTS,
        json.dumps({"events": list(events)}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert response.status_code == 202, response.content
    return response.json()


def test_a_shipped_bulk_of_sixty_is_stored_and_flagged_but_stays_ok(client, paubox, key):
    assert ingest(client, key, event(batch_size=60))["accepted"] == 1
    row = RequestLog.objects.get()
    assert row.batch_size == 60
    assert row.flags == "batch_too_large"
    assert row.outcome == Outcome.OK and row.status == 200
    assert row.error_code == ""  # a mark beside the outcome, not an error
    assert [d.code for d in row.flag_diagnoses()] == ["batch_too_large"]


def test_a_bulk_of_ten_or_fifty_is_counted_without_a_flag(client, paubox, key):
    ingest(client, key, event(batch_size=10), event(batch_size=50))
    rows = RequestLog.objects.order_by("batch_size")
    assert [(r.batch_size, r.flags) for r in rows] == [(10, ""), (50, "")]


def test_only_a_preset_with_a_batch_limit_flags(client, key, db):
    Integration.objects.create(name="Other", slug="paubox", environment="production")
    ingest(client, key, event(batch_size=500))
    row = RequestLog.objects.get()
    assert (row.batch_size, row.flags) == (500, "")


def test_a_flagged_bulk_that_failed_keeps_its_error_and_the_flag(client, paubox, key):
    body = json.dumps({"errors": [{"code": 400, "title": "Bad", "details": "recipients"}]})
    ingest(client, key, event(batch_size=80, status=400, error_body=body))
    row = RequestLog.objects.get()
    assert row.outcome == Outcome.CLIENT_ERROR
    assert (row.error_code, row.flags) == ("400", "batch_too_large")
    assert row.error_message == "Bad: recipients"


@pytest.mark.parametrize("bad", ["60", -1, 2.5, True, [60]])
def test_a_bad_batch_size_is_rejected_by_name(client, paubox, key, bad):
    answer = ingest(client, key, event(batch_size=bad))
    assert answer["accepted"] == 0
    assert answer["errors"][0]["field"] == "batch_size"
    assert not RequestLog.objects.exists()


def test_a_huge_count_is_capped_to_the_column(client, paubox, key):
    ingest(client, key, event(batch_size=100_000))
    row = RequestLog.objects.get()
    assert (row.batch_size, row.flags) == (32767, "batch_too_large")


def test_the_recorder_stores_an_in_process_attempts_batch_size(paubox, transactional_db, tmp_path):
    recorder.configure(spool_dir=tmp_path / "spool", busy_timeout_ms=200)
    try:
        for size in (60, 10):
            recorder.get().record(
                Attempt(
                    paubox.pk, "client", timezone.now(), 30.0, "POST", "https", "api.paubox.net",
                    None, "/v1/acme/bulk_messages", None, 200, None, 100, 20, None, "", 1, 0.0,
                    None, None, None, {"batch_size": size},
                )
            )  # fmt: skip
        recorder.flush(timeout=30)
    finally:
        recorder.configure()
    rows = RequestLog.objects.order_by("-batch_size")
    assert [(r.batch_size, r.flags, r.path) for r in rows] == [
        (60, "batch_too_large", "/v1/acme/bulk_messages"),
        (10, "", "/v1/acme/bulk_messages"),
    ]


def test_the_request_log_shows_the_badge_and_finds_flagged_rows(client, paubox, key, viewer):
    ingest(client, key, event(batch_size=60), event(batch_size=10, url=BULK + "?n=10"))
    client.force_login(viewer)
    page = client.get("/requests/", {"q": "batch_too_large"}).content.decode()
    assert page.count('class="badge flag"') == 1
    assert "Batch over the advised size · 60" in page
    flagged = RequestLog.objects.get(batch_size=60)
    detail = client.get(f"/requests/{flagged.pk}/").content.decode()
    assert "60 items" in detail and "split it" in detail


def test_scorecard_batching_fails_on_an_oversize_batch(client, paubox, key):
    ordinary = [event(method="GET", url=BULK.replace("bulk_", "")) for _ in range(25)]
    ingest(client, key, *ordinary)
    assert _batching(paubox).grade == scorecard.Grade.PASS
    ingest(client, key, event(batch_size=60))
    result = _batching(paubox)
    assert result.grade == scorecard.Grade.FAIL
    assert result.figures["oversize"] == 1
    assert "q=batch_too_large" in result.link


def _batching(integration: Integration) -> scorecard.Result:
    report = scorecard.compute(integration)
    return next(r for r in report.results if r.key == "batching")


def test_an_otlp_span_with_a_message_count_is_flagged_the_same(paubox):
    from api import otlp

    paubox.host_patterns = "api.paubox.net"
    paubox.save()

    def span(count: int) -> dict:
        attrs = {
            "http.request.method": "POST",
            "url.full": BULK,
            "server.address": "api.paubox.net",
            "http.response.status_code": 200,
            "messaging.batch.message_count": count,
        }
        return {
            "traceId": "5b8efff798038103d269b633813fc60c",
            "spanId": f"{count:016x}",
            "name": "POST",
            "kind": 3,
            "startTimeUnixNano": "1700000000000000000",
            "endTimeUnixNano": "1700000000120000000",
            "attributes": [
                {
                    "key": k,
                    "value": {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v},
                }
                for k, v in attrs.items()
            ],
        }

    document = {"resourceSpans": [{"scopeSpans": [{"spans": [span(60), span(10)]}]}]}
    batch = otlp.convert(otlp.decode(json.dumps(document).encode(), otlp.JSON))
    rows = [attempts.to_row(a) for a in batch.attempts]
    assert [(r["batch_size"], r["flags"], r["outcome"]) for r in rows] == [
        (60, "batch_too_large", "ok"),
        (10, "", "ok"),
    ]


# --- end to end: the real clients against the sandbox's Paubox ---------------------------------


@pytest.fixture
def sandbox():
    from demo.sandbox import Sandbox, SandboxConfig

    with Sandbox(SandboxConfig(seed=1, latency_scale=0.0, error_rate=0.0)) as sb:
        yield sb


def bulk_body(n: int) -> dict:
    message = {"recipients": ["patient@example.com"], "headers": {"subject": "Results"}}
    return {"data": {"messages": [message] * n}}


PAUBOX_AUTH = {"Authorization": f"Token token={PAUBOX_KEY}"}


def test_a_monitored_client_bulk_of_sixty_lands_flagged_and_ten_does_not(
    sandbox, transactional_db, tmp_path
):
    Integration.objects.create(
        name="Paubox", slug="paubox", environment="production", preset="paubox",
        base_url=f"{sandbox.url}/paubox/v1/{PAUBOX_USER}",
    )  # fmt: skip
    recorder.configure(spool_dir=tmp_path / "spool", busy_timeout_ms=200)
    try:
        with MonitoredClient(
            integration="paubox", environment="production",
            base_url=f"{sandbox.url}/paubox/v1/{PAUBOX_USER}/", headers=PAUBOX_AUTH,
        ) as api:  # fmt: skip
            assert api.post("bulk_messages", json=bulk_body(60)).status_code == 200
            assert api.post("bulk_messages", json=bulk_body(10)).status_code == 200
            single = {"data": {"message": bulk_body(1)["data"]["messages"][0]}}
            assert api.post("messages", json=single).status_code == 200
        recorder.flush(timeout=30)
    finally:
        recorder.configure()
    rows = {(r.path.rsplit("/", 1)[1], r.batch_size): r for r in RequestLog.objects.all()}
    assert set(rows) == {("bulk_messages", 60), ("bulk_messages", 10), ("messages", None)}
    assert rows["bulk_messages", 60].flags == "batch_too_large"
    assert rows["bulk_messages", 60].outcome == Outcome.OK
    assert rows["bulk_messages", 10].flags == ""
    assert PAUBOX_KEY not in json.dumps(list(RequestLog.objects.values()), default=str)


def test_the_shipped_sdk_counts_the_batch_for_the_ingest_api(
    sandbox, live_server, transactional_db, tmp_path
):
    import upstream_client
    from upstream_client.ship import Shipper

    Integration.objects.create(
        name="Paubox", slug="paubox", environment="production", preset="paubox",
    )  # fmt: skip
    _, key = ApiKey.issue(name="svc", scopes=["ingest"])
    shipper = Shipper(live_server.url, key, spool_dir=tmp_path / "spool", flush_interval=0.05)
    try:
        with upstream_client.Client(
            integration="paubox", environment="production", sink=shipper,
            base_url=f"{sandbox.url}/paubox/v1/{PAUBOX_USER}/", headers=PAUBOX_AUTH,
        ) as api:  # fmt: skip
            api.post("bulk_messages", json=bulk_body(60))
            api.post("bulk_messages", json=bulk_body(10))
        assert shipper.flush(timeout=30)
    finally:
        shipper.close()
    rows = sorted(RequestLog.objects.values_list("batch_size", "flags", "outcome"))
    assert rows == [(10, "", "ok"), (60, "batch_too_large", "ok")]


def test_the_sdk_in_upstreams_own_process_counts_the_batch_too(sandbox, transactional_db, tmp_path):
    import upstream_client

    from monitoring.local_sink import LocalSink

    Integration.objects.create(
        name="Paubox", slug="paubox", environment="production", preset="paubox",
    )  # fmt: skip
    # Loaded now, so the sink starts no loader thread that could outlive this test.
    attempts.policy_for("paubox", "production")
    recorder.configure(spool_dir=tmp_path / "spool", busy_timeout_ms=200)
    try:
        with upstream_client.Client(
            integration="paubox", environment="production", sink=LocalSink(),
            base_url=f"{sandbox.url}/paubox/v1/{PAUBOX_USER}/", headers=PAUBOX_AUTH,
        ) as api:  # fmt: skip
            api.post("bulk_messages", json=bulk_body(60))
            api.post("bulk_messages", json=bulk_body(10))
        recorder.flush(timeout=30)
    finally:
        recorder.configure()
    rows = sorted(RequestLog.objects.values_list("batch_size", "flags", "outcome"))
    assert rows == [(10, "", "ok"), (60, "batch_too_large", "ok")]
