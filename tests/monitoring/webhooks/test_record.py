"""A delivery as an attempt: the row contract's fields, ids, event types and hosts."""

from __future__ import annotations

import pytest

from monitoring import attempts, recorder
from monitoring.webhooks import record
from tests.monitoring.webhooks.hookkit import make_endpoint


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"id": "evt_1", "type": "charge.succeeded"}', ("evt_1", "charge.succeeded")),
        (b'  {"id": 42, "event": "mail.bounced"}', (42, "mail.bounced")),
        (b'{"event_type": "x", "id": null}', ("", "x")),
        (b'{"type": 7}', ("", "")),
        (b"[1, 2]", ("", "")),
        (b"not json", ("", "")),
        (b"{" * 100_000, ("", "")),
        (b"", ("", "")),
    ],
)
def test_event_id_and_type_come_from_a_json_object_only(body, expected):
    assert record.event_of(body) == expected


def test_ids_fit_the_call_id_column():
    assert record.call_id_of("msg_2Zq1") == "msg_2Zq1"
    assert record.call_id_of("72d3162e-cc78-11e3-81ab-4c9367dc0958") == (
        "72d3162ecc7811e381ab4c9367dc0958"
    )
    long = record.call_id_of("x" * 200)
    assert len(long) == 32 and long == record.call_id_of("x" * 200) != record.call_id_of("y" * 200)


def test_hosts_and_paths():
    assert record.host_of("https://api.stripe.com/v1") == "api.stripe.com"
    assert record.host_of("") == record.host_of("http://[bad") == "webhook"
    assert record._path("invoice.paid") == "/invoice.paid"
    assert record._path("") == record._path("/?#") == "/unknown"
    assert record._path("a/b?c\x00d") == "/abcd"
    assert len(record._path("t" * 500)) == 1 + record.EVENT_TYPE_CAP


@pytest.mark.django_db
def test_a_delivery_becomes_the_row_the_rules_read(monkeypatch):
    endpoint = make_endpoint("standard")
    queued = []
    monkeypatch.setattr(recorder, "record", queued.append)
    record.record(
        record.Delivery(
            integration_id=endpoint.integration_id,
            host="api.acme.test",
            scheme="https",
            received=1_700_000_002.5,
            status=202,
            error_code="",
            event_type="invoice.paid",
            delivery_id="msg_1",
            timestamp=1_700_000_000,
            size=321,
        )
    )
    [item] = queued
    row = attempts.to_row(item)
    assert row["source"] == "webhook"
    assert (row["method"], row["host"], row["path"], row["status"]) == (
        "POST",
        "api.acme.test",
        "/invoice.paid",
        202,
    )
    assert (row["outcome"], row["latency_ms"], row["response_bytes"], row["call_id"]) == (
        "ok",
        2500.0,
        321,
        "msg_1",
    )
