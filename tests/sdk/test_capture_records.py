"""Capture records: events built off the caller's thread, unclosed streams, batch sizes and
success-body samples, against the real libraries and a loopback server (no Django)."""

from __future__ import annotations

import asyncio
import gc
import json

import httpx2
import pytest
import upstream_client
import upstream_client.httpx2
import upstream_client.requests
from upstream_client._capture import Meter

from tests.sdk.test_capture import SECRET, STRIPE_KEY, ListSink, Provider


@pytest.fixture(scope="module")
def provider():
    running = Provider()
    yield running
    running.close()


class RecordSink:
    """A sink that takes records as they are and builds their events later, as the
    Shipper's sender thread does."""

    def __init__(self) -> None:
        self.records: list = []

    def submit(self, event: dict) -> None:
        self.records.append(event)

    def submit_record(self, record) -> None:
        self.records.append(record)

    def events(self) -> list[dict]:
        return [r if r.__class__ is dict else r.event() for r in self.records]


BULK = {"data": {"messages": [{"to": f"user{i}@example.com"} for i in range(60)]}}


# --- records ----------------------------------------------------------------------------------


def test_a_sink_with_submit_record_gets_records_and_their_events_are_redacted(provider):
    sink = RecordSink()
    headers = {"Authorization": f"Bearer {SECRET}", "Stripe-Version": "2024-06-20"}
    with upstream_client.Client(integration="acme", sink=sink) as client:
        client.get(f"{provider.url}/v1/items/42?api_key={SECRET}", headers=headers)
    session = upstream_client.requests.Session(integration="acme", sink=sink)
    session.get(f"{provider.url}/v1/items/42?api_key={SECRET}", headers=headers)
    assert [type(r) for r in sink.records if isinstance(r, Meter)] and len(sink.records) == 2
    events = sink.events()
    text = json.dumps(events)
    assert SECRET not in text and "set-cookie" not in text
    for event in events:
        assert event["url"].endswith("/v1/items/42?api_key=[redacted]")
        assert event["status"] == 200 and event["response_bytes"] > 0
        assert event["response_headers"]["x-request-id"] == "req_123"
        assert len(event["key_fingerprint"]) == 16 and event["version_header"] == "Stripe-Version"
        assert event["call_id"] and event["time"].endswith("Z")


def test_each_fresh_call_gets_its_own_call_id(provider):
    sink = RecordSink()
    with upstream_client.Client(integration="acme", sink=sink) as client:
        for _ in range(3):
            client.get(f"{provider.url}/ok")
    assert len({e["call_id"] for e in sink.events()}) == 3


# --- a stream the caller never closes ---------------------------------------------------------


def _drop_httpx(client, url: str) -> None:
    response = client.send(client.build_request("GET", url), stream=True)
    lines = response.iter_lines()
    for _ in range(3):
        next(lines)
    # No close: the caller just lets go of the response.


@pytest.mark.parametrize("make", ["httpx", "httpx2", "requests"])
def test_a_stream_the_caller_never_closes_sends_one_event_when_collected(provider, make):
    events = ListSink()
    url = f"{provider.url}/sse/full"
    if make == "requests":
        session = upstream_client.requests.Session(integration="acme", sink=events)
        response = session.get(url, stream=True)
        lines = response.iter_lines()
        for _ in range(3):
            next(lines)
        del lines, response
    else:
        module = upstream_client if make == "httpx" else upstream_client.httpx2
        client = module.Client(integration="acme", sink=events)
        _drop_httpx(client, url)
    gc.collect()
    (event,) = events.events
    assert event["streamed"] is True and event["status"] == 200
    assert "outcome" not in event and "stream_error" not in event  # closed early, not failed
    full = 50 * len(b'data: {"delta": "token 0"}\n\n')
    assert 0 < event["response_bytes"] < full
    assert event["latency_ms"] <= event["first_byte_ms"] <= event["duration_ms"]
    gc.collect()
    assert len(events.events) == 1  # once


def test_an_async_stream_the_caller_never_closes_sends_one_event(provider):
    events = ListSink()

    async def run() -> None:
        async with upstream_client.httpx2.AsyncClient(integration="acme", sink=events) as client:
            request = client.build_request("GET", f"{provider.url}/sse/full")
            response = await client.send(request, stream=True)
            await response.aiter_raw().__anext__()
            del response
            gc.collect()

    asyncio.run(run())
    gc.collect()
    assert len(events.events) == 1
    (event,) = events.events
    assert event["status"] == 200 and "outcome" not in event and event["response_bytes"] > 0


def test_a_closed_stream_is_not_sent_again_when_collected(provider):
    events = ListSink()
    client = upstream_client.Client(integration="acme", sink=events)
    with client.stream("GET", f"{provider.url}/sse/full") as response:
        next(response.iter_lines())
    del response
    gc.collect()
    assert len(events.events) == 1


# --- batch sizes --------------------------------------------------------------------------------


def test_a_bulk_post_carries_its_batch_size(provider):
    sink = RecordSink()
    url = f"{provider.url}/v1/bulk_messages"
    with upstream_client.Client(integration="paubox", sink=sink) as client:
        assert client.post(url, json=BULK).status_code == 200
        client.post(f"{provider.url}/v1/messages", json=BULK)  # not a bulk endpoint
        client.get(url)
    with upstream_client.httpx2.Client(integration="paubox", sink=sink) as client:
        client.post(url, json=BULK)
    session = upstream_client.requests.Session(integration="paubox", sink=sink)
    session.post(url, json=BULK)
    session.post(url, data=json.dumps({"x": 1}))  # no batch list in it
    sizes = [e.get("batch_size") for e in sink.events()]
    assert sizes == [60, None, None, 60, 60, None]


def test_a_failed_bulk_post_carries_its_batch_size_too(provider):
    events = ListSink()
    with upstream_client.Client(integration="paubox", sink=events) as client:
        client.post(f"{provider.url}/status/400/bulk", json=BULK)
    (event,) = events.events
    assert event["status"] == 400 and event["batch_size"] == 60


# --- success bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize("make", ["httpx", "httpx2", "requests", "transport"])
def test_a_2xx_json_body_is_sampled_only_when_asked(provider, make):
    sink = RecordSink()
    for success_bodies in (False, True):
        url = f"{provider.url}/ok-secret"
        if make == "requests":
            session = upstream_client.requests.Session(
                integration="acme", sink=sink, success_bodies=success_bodies
            )
            session.get(url)
        elif make == "transport":
            wrapped = upstream_client.transport(
                wrapped=httpx2.HTTPTransport(), integration="acme", sink=sink,
                success_bodies=success_bodies,
            )  # fmt: skip
            with httpx2.Client(transport=wrapped) as client:
                client.get(url)
        else:
            module = upstream_client if make == "httpx" else upstream_client.httpx2
            with module.Client(
                integration="acme", sink=sink, success_bodies=success_bodies
            ) as client:
                client.get(url)
    off, on = sink.events()
    assert "ok_body" not in off
    sample = json.loads(on["ok_body"])
    assert sample["ok"] is True and sample["api_key"] == "[redacted]"
    assert SECRET not in on["ok_body"] and STRIPE_KEY not in on["ok_body"]


def test_no_sample_of_a_stream_or_a_failure(provider):
    events = ListSink()
    with upstream_client.Client(integration="acme", sink=events, success_bodies=True) as client:
        with client.stream("GET", f"{provider.url}/sse/full") as response:
            response.read()
        client.get(f"{provider.url}/status/404")
    assert [("ok_body" in e) for e in events.events] == [False, False]
