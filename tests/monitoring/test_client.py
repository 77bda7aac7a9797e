"""MonitoredClient / AsyncMonitoredClient / MonitoringTransport against the loopback sandbox."""

from __future__ import annotations

import asyncio
import gc
import socket

import httpx
import pytest

from demo.sandbox import Sandbox, SandboxConfig
from monitoring import attempts, audit, recorder
from monitoring.client import (
    AsyncMonitoredClient,
    InsecureRequestRefused,
    MonitoredClient,
    MonitoringTransport,
    RetryPolicy,
    next_page,
)
from monitoring.models import AuditLog, Integration, MetricBucket, RequestLog

KEY = {"Authorization": "Bearer sk_test_client_tests"}
FAST_RETRY = RetryPolicy(max_attempts=3, backoff=0.01, max_backoff=0.02, jitter=None)


@pytest.fixture
def recording(transactional_db, tmp_path):
    """The process recorder, spooling under tmp_path; everything flushed before teardown."""
    attempts.clear_policies()  # ids are reused once the test database is emptied
    recorder.configure(spool_dir=tmp_path / "spool", busy_timeout_ms=200)
    yield recorder
    recorder.flush(timeout=30)
    assert recorder.stats()["lost"] == 0


@pytest.fixture
def sandbox():
    config = SandboxConfig(seed=7, latency_scale=0, error_rate=0, auth_burst_every_s=None)
    with Sandbox(config) as running:
        yield running


def rows(slug: str = "paybox") -> list[RequestLog]:
    recorder.flush(timeout=30)
    return list(RequestLog.objects.filter(integration__slug=slug).order_by("id"))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_call_is_recorded_with_template_status_sizes_and_rate_limits(recording, sandbox):
    with MonitoredClient(integration="paybox", base_url=sandbox.url, headers=KEY) as api:
        response = api.get("/v1/status/200", params={"limit": "5"})
    assert response.status_code == 200
    (row,) = rows()
    assert (row.method, row.scheme, row.path, row.query) == (
        "GET",
        "http",
        "/v1/status/{id}",
        "limit=5",
    )
    assert row.host == sandbox.url.removeprefix("http://")
    assert (row.status, row.outcome, row.attempt, row.backoff_ms) == (200, "ok", 1, 0)
    assert row.response_bytes == len(response.content)
    assert row.request_bytes == 0
    assert row.latency_ms > 0
    assert row.ratelimit_limit == 600 and row.ratelimit_remaining == 599
    assert row.ratelimit_reset is not None
    assert row.api_version == "2026-01-01"
    assert 16 < len(row.call_id) <= 32
    assert row.error_code == row.error_body == ""


def test_the_integration_is_created_on_first_use_in_the_sandbox_environment(recording, sandbox):
    base = sandbox.url.replace("http://", "http://deploy:hunter2@")
    with MonitoredClient(integration="new-crm", base_url=base, headers=KEY) as api:
        api.get("/v1/health")
    integration = Integration.objects.get(slug="new-crm")
    assert integration.environment == "sandbox"
    assert integration.name == "New Crm"
    assert integration.base_url == sandbox.url  # the userinfo never reaches the database
    assert AuditLog.objects.filter(action="integration.auto_created").count() == 1
    assert len(rows("new-crm")) == 1


def test_an_existing_integration_is_used_and_its_explicit_templates_win(recording, sandbox):
    Integration.objects.create(
        name="Paybox",
        slug="paybox",
        environment="production",
        path_templates="/v1/status/{status_code}",
    )
    with MonitoredClient(
        integration="paybox", environment="production", base_url=sandbox.url
    ) as api:
        api.get("/v1/status/204")
    (row,) = rows()
    assert row.path == "/v1/status/{status_code}"
    assert Integration.objects.filter(slug="paybox").count() == 1


def test_a_stream_the_caller_never_closes_is_recorded_once_collected(recording, sandbox):
    api = MonitoredClient(integration="paybox", base_url=sandbox.url, headers=KEY)
    response = api.send(api.build_request("GET", "/v1/customers"), stream=True)
    assert next(response.iter_raw(16))
    del response
    gc.collect()
    (row,) = rows()
    assert (row.status, row.outcome, row.error_code) == (200, "ok", "")
    assert row.response_bytes > 0 and row.duration_ms >= row.latency_ms
    assert len(row.key_fingerprint) == 16
    api.close()


def test_an_unknown_environment_is_a_clear_error(recording):
    with pytest.raises(ValueError, match="environment must be one of"):
        MonitoredClient(integration="paybox", environment="prod")


def test_failures_return_what_httpx_returns_and_their_error_payload_is_parsed(recording, sandbox):
    with httpx.Client(base_url=sandbox.url) as plain:
        expected = plain.get("/v1/status/404")
    with MonitoredClient(integration="paybox", base_url=sandbox.url) as api:
        response = api.get("/v1/status/404")
        assert response.elapsed.total_seconds() >= 0
    assert response.status_code == expected.status_code == 404
    assert response.json() == expected.json()
    assert response.headers["content-type"] == expected.headers["content-type"]
    (row,) = rows()
    assert (row.status, row.outcome) == (404, "client_error")
    assert row.error_code == "resource_missing"
    assert row.error_message == "No such resource."
    assert row.error_body == response.text
    assert row.response_bytes == len(response.content)


def test_streamed_responses_are_recorded_and_read_as_usual(recording, sandbox):
    with MonitoredClient(integration="paybox", base_url=sandbox.url) as api:
        with api.stream("GET", "/v1/customers", headers=KEY) as response:
            body = response.read()
        with api.stream("GET", "/v1/status/500") as failed:
            chunks = list(failed.iter_bytes())
    assert b'"object":"list"' in body
    assert b"internal_error" in b"".join(chunks)
    assert [row.status for row in rows()] == [200, 500]


def test_a_connect_error_is_raised_like_httpx_and_recorded(recording):
    url = f"http://127.0.0.1:{closed_port()}/v1/health"
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)
    with MonitoredClient(integration="paybox") as api, pytest.raises(httpx.ConnectError):
        api.get(url)
    (row,) = rows()
    assert row.status is None
    assert row.outcome == "connect_error"
    assert "ConnectError" in row.error_message


def test_a_timeout_is_raised_and_recorded_as_timeout(recording, sandbox):
    with (
        MonitoredClient(integration="paybox", base_url=sandbox.url, timeout=0.2) as api,
        pytest.raises(httpx.ReadTimeout),
    ):
        api.get("/v1/slow", params={"ms": "2000"})
    (row,) = rows()
    assert (row.status, row.outcome) == (None, "timeout")


def test_retry_after_is_honoured_and_every_attempt_is_a_row(recording, sandbox):
    policy = RetryPolicy(max_attempts=2, backoff=0.01, max_total_wait=5)
    with MonitoredClient(integration="paybox", base_url=sandbox.url, retry=policy) as api:
        response = api.get("/v1/status/503")  # the sandbox says Retry-After: 1
    assert response.status_code == 503
    first, second = rows()
    assert (first.attempt, second.attempt) == (1, 2)
    assert first.call_id == second.call_id != ""
    assert first.retry_after_s == 1
    assert second.backoff_ms >= 1000
    assert (second.created - first.created).total_seconds() >= 1
    assert len(sandbox.requests) == 2


def test_a_retry_after_longer_than_the_budget_is_not_waited_for(recording, sandbox):
    policy = RetryPolicy(max_attempts=4, backoff=0.01, max_total_wait=0.5)
    with MonitoredClient(integration="paybox", base_url=sandbox.url, retry=policy) as api:
        response = api.get("/v1/status/429")
    assert response.status_code == 429
    assert [row.attempt for row in rows()] == [1]


def test_a_post_without_idempotency_key_is_not_retried(recording, sandbox):
    sandbox.set_mode(error_rate=1.0)  # every charge fails with 500/502/503
    policy = RetryPolicy(max_attempts=3, backoff=0.01, retry_on={500, 502, 503})
    charge = {"amount": 100, "currency": "usd"}
    with MonitoredClient(integration="paybox", base_url=sandbox.url, retry=policy) as api:
        plain = api.post("/v1/charges", json=charge, headers=KEY)
        keyed = api.post("/v1/charges", json=charge, headers={**KEY, "Idempotency-Key": "order-42"})
    assert plain.status_code >= 500 and keyed.status_code >= 500
    logged = rows()
    by_call: dict[str, list[int]] = {}
    for row in logged:
        by_call.setdefault(row.call_id, []).append(row.attempt)
    assert sorted(by_call.values(), key=len) == [[1], [1, 2, 3]]
    assert all(row.request_bytes == len(b'{"amount":100,"currency":"usd"}') for row in logged)


def test_connect_errors_are_retried_for_idempotent_methods_then_raised(recording):
    url = f"http://127.0.0.1:{closed_port()}/v1/customers/7"
    with (
        MonitoredClient(integration="paybox", retry=FAST_RETRY) as api,
        pytest.raises(httpx.ConnectError),
    ):
        api.delete(url)
    assert [(r.attempt, r.outcome) for r in rows()] == [
        (1, "connect_error"),
        (2, "connect_error"),
        (3, "connect_error"),
    ]


def test_deprecation_and_sunset_headers_are_recorded(recording, sandbox):
    with MonitoredClient(integration="paybox", base_url=sandbox.url, headers=KEY) as api:
        api.get("/v1/legacy/report")
    (row,) = rows()
    assert row.deprecated is True
    assert row.deprecation_at is not None and row.sunset_at is not None
    assert row.deprecation_at < row.sunset_at
    assert row.deprecation_link == f"{sandbox.url}/docs/migrate"


def test_plain_http_to_a_remote_host_is_refused_and_recorded(recording, sandbox):
    Integration.objects.create(name="Paybox", slug="paybox", environment="production")
    # 0.0.0.0 is not a loopback address, but a connection to it would reach this host.
    port = sandbox.url.rpartition(":")[2]
    with (
        MonitoredClient(integration="paybox", environment="production") as api,
        pytest.raises(InsecureRequestRefused, match="requires https"),
    ):
        api.get(f"http://0.0.0.0:{port}/v1/health")
    assert sandbox.requests == []
    (row,) = rows()
    assert (row.outcome, row.status, row.scheme) == ("blocked", None, "http")


def test_the_flag_policy_lets_plain_http_through_and_records_it(recording, sandbox, settings):
    settings.UPSTREAM = {**settings.UPSTREAM, "HTTPS_POLICY": "flag"}
    Integration.objects.create(name="Paybox", slug="paybox", environment="production")
    port = sandbox.url.rpartition(":")[2]
    with MonitoredClient(integration="paybox", environment="production") as api:
        assert api.get(f"http://0.0.0.0:{port}/v1/health").status_code == 200
    (row,) = rows()
    assert (row.outcome, row.scheme) == ("ok", "http")


def test_loopback_http_is_allowed_even_when_https_is_required(recording, sandbox):
    Integration.objects.create(name="Paybox", slug="paybox", environment="production")
    with MonitoredClient(integration="paybox", environment="production") as api:
        assert api.get(f"{sandbox.url}/v1/health").status_code == 200


def test_paginate_follows_link_headers_and_records_each_page(recording, sandbox):
    with MonitoredClient(integration="paybox", base_url=sandbox.url, headers=KEY) as api:
        pages = list(api.paginate("/v1/customers", params={"limit": 20}))
    assert [len(page.json()["data"]) for page in pages] == [20, 20, 10]
    ids = [c["id"] for page in pages for c in page.json()["data"]]
    assert len(set(ids)) == 50
    logged = rows()
    assert len(logged) == 3
    assert {row.path for row in logged} == {"/v1/customers"}
    assert len({row.call_id for row in logged}) == 3


def test_next_page_reads_json_cursor_and_url_fields():
    def page(body: dict, url: str = "https://api.example.com/v1/items?limit=2") -> httpx.Response:
        return httpx.Response(200, json=body, request=httpx.Request("GET", url))

    url, params = next_page(page({"data": [], "next_cursor": "abc"}), "cursor")
    assert str(url) == "https://api.example.com/v1/items"
    assert params == {"limit": "2", "cursor": "abc"}
    _, params = next_page(page({"response_metadata": {"next_cursor": "xyz"}}), "after")
    assert params["after"] == "xyz"
    url, params = next_page(page({"links": {"next": "/v1/items?page=3"}}), "cursor")
    assert (str(url), params) == ("https://api.example.com/v1/items?page=3", None)
    assert next_page(page({"data": [], "next_cursor": None}), "cursor") is None
    assert next_page(page({"data": [], "next_cursor": ""}), "cursor") is None


def test_paginate_stops_at_an_error_page(recording, sandbox):
    with MonitoredClient(integration="paybox", base_url=sandbox.url) as api:
        pages = list(api.paginate("/v1/customers"))  # no key: 401
    assert [page.status_code for page in pages] == [401]


def test_throttle_spaces_calls_instead_of_burning_the_quota(recording):
    config = SandboxConfig(
        seed=3, latency_scale=0, error_rate=0, quota=6, quota_window_s=2, auth_burst_every_s=None
    )
    with (
        Sandbox(config) as sandbox,
        MonitoredClient(
            integration="paybox", base_url=sandbox.url, headers=KEY, throttle=0.5
        ) as api,
    ):
        statuses = [api.get("/v1/health").status_code for _ in range(8)]
    assert 429 not in statuses
    assert any(row.backoff_ms > 0 for row in rows())


def test_an_existing_httpx_client_adopts_monitoring_through_the_transport(recording, sandbox):
    transport = MonitoringTransport(wrapped=httpx.HTTPTransport(), integration="legacy-app")
    with httpx.Client(transport=transport, base_url=sandbox.url) as plain:
        assert plain.get("/v1/health").status_code == 200
    (row,) = rows("legacy-app")
    assert row.path == "/v1/health"
    assert transport.integration_id == row.integration_id


def test_the_async_client_records_retries_and_raises_like_httpx(recording, sandbox):
    port = closed_port()

    async def calls() -> tuple[int, type[BaseException] | None]:
        async with AsyncMonitoredClient(
            integration="paybox", base_url=sandbox.url, headers=KEY, retry=FAST_RETRY
        ) as api:
            ok = await api.get("/v1/status/201")
            pages = [page async for page in api.paginate("/v1/customers", params={"limit": 25})]
            assert len(pages) == 2
            try:
                await api.get(f"http://127.0.0.1:{port}/v1/health")
            except httpx.ConnectError as exc:
                return ok.status_code, type(exc)
            return ok.status_code, None

    status, raised = asyncio.run(calls())
    assert (status, raised) == (201, httpx.ConnectError)
    logged = rows()
    assert [(r.status, r.attempt) for r in logged] == [
        (201, 1),
        (200, 1),
        (200, 1),
        (None, 1),
        (None, 2),
        (None, 3),
    ]


def test_the_async_client_parses_error_payloads(recording, sandbox):
    async def call() -> httpx.Response:
        async with AsyncMonitoredClient(integration="paybox", base_url=sandbox.url) as api:
            return await api.get("/v1/customers")

    response = asyncio.run(call())
    assert response.status_code == 401
    (row,) = rows()
    assert row.error_code == "missing_api_key"
    assert "Authorization" in row.error_message


def test_calls_feed_the_metric_buckets_in_the_same_batch(recording, sandbox):
    with MonitoredClient(integration="paybox", base_url=sandbox.url) as api:
        for _ in range(3):
            api.get("/v1/status/401")
        api.get("/v1/health")
    assert len(rows()) == 4
    minute = MetricBucket.objects.get(grain="minute", endpoint="GET /v1/status/{id}")
    assert (minute.total, minute.s401) == (3, 3)


def test_the_audit_action_for_auto_created_integrations_is_recorded_once(recording, sandbox):
    for _ in range(2):
        with MonitoredClient(integration="twice", base_url=sandbox.url) as api:
            api.get("/v1/health")
    assert AuditLog.objects.filter(action="integration.auto_created").count() == 1
    assert audit.verify_chain().ok
