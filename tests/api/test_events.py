"""POST /api/v1/events: validation per event, policy and redaction, limits, idempotency,
durability when the database is locked."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request

import pytest
from django.db import OperationalError

from api import events as events_view
from api.models import ApiKey, IngestBatch
from monitoring import attempts, recorder
from monitoring.models import Integration, MetricBucket, RecorderLoss, RequestLog

pytestmark = pytest.mark.django_db(transaction=False)
URL = "/api/v1/events"


@pytest.fixture
def stripe():
    attempts.clear_policies()  # another file's cached policy may hold this id or slug
    return Integration.objects.create(
        name="Stripe",
        slug="stripe",
        environment="production",
        path_templates="/v1/customers/{id}",
    )


@pytest.fixture
def key():
    return ApiKey.issue(name="svc", scopes=["ingest"])[1]


def _event(**fields):
    event = {
        "integration": "stripe",
        "environment": "production",
        "time": "2026-01-02T03:04:05Z",
        "method": "get",
        "url": "https://user:pw@api.stripe.com/v1/customers/cus_123?api_key=sk_live_abc&x=1",
        "status": 200,
        "latency_ms": 12.5,
    }
    event.update(fields)
    return event


def _post(client, key, body, *, content_type="application/json", **extra):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.generic(
        "POST", URL, data, content_type=content_type, HTTP_AUTHORIZATION=f"Bearer {key}", **extra
    )


def test_good_events_are_stored_with_policy_and_redaction(client, stripe, key):
    response = _post(client, key, {"batch_id": "b1", "events": [_event()]})
    assert response.status_code == 202, response.content
    assert response.json() == {"accepted": 1, "rejected": 0, "duplicate": False, "errors": []}
    row = RequestLog.objects.get()
    assert row.source == "ingest" and row.integration_id == stripe.pk
    assert row.host == "api.stripe.com" and "user" not in row.host
    assert row.method == "GET" and row.path == "/v1/customers/{id}"
    assert "sk_live_abc" not in row.query
    assert MetricBucket.objects.filter(integration=stripe).exists()


def test_one_bad_event_never_drops_the_good_ones(client, stripe, key):
    body = {
        "events": [
            _event(),
            _event(latency_ms="slow"),
            _event(status=None),
            _event(integration="nope"),
            _event(status=None, outcome="timeout"),
            "not an object",
        ]
    }
    response = _post(client, key, body)
    assert response.status_code == 202
    data = response.json()
    assert data["accepted"] == 2 and data["rejected"] == 4
    assert [(e["index"], e["field"]) for e in data["errors"]] == [
        (1, "latency_ms"),
        (2, "outcome"),
        (3, "integration"),
        (5, ""),
    ]
    assert RequestLog.objects.count() == 2
    assert RequestLog.objects.filter(outcome="timeout", status=None).count() == 1


def test_error_bodies_and_headers_are_parsed_and_scrubbed(client, stripe, key):
    event = _event(
        status=429,
        response_headers={
            "Retry-After": "7",
            "Set-Cookie": "s=secret",
            "content-type": "application/json",
        },
        error_body=json.dumps(
            {
                "error": {"code": "rate_limited", "message": "slow down"},
                "token": "sk_live_abcdefghijklmnop",
            }
        ),
    )
    assert _post(client, key, {"events": [event]}).status_code == 202
    row = RequestLog.objects.get()
    assert row.retry_after_s == 7 and row.error_code == "rate_limited"
    assert "sk_live_abcdefghijklmnop" not in row.error_body
    assert "secret" not in json.dumps(row.error_body)


def test_a_batch_sent_twice_is_stored_once(client, stripe, key):
    body = {"batch_id": "same", "events": [_event(), _event()]}
    assert _post(client, key, body).json()["duplicate"] is False
    again = _post(client, key, body)
    assert again.status_code == 202
    assert again.json() == {"accepted": 2, "rejected": 0, "duplicate": True, "errors": []}
    assert RequestLog.objects.count() == 2 and IngestBatch.objects.count() == 1


def test_unknown_integrations_are_created_only_if_the_key_allows(client):
    _, creator = ApiKey.issue(name="c", scopes=["ingest"], allow_create=True)
    _, plain = ApiKey.issue(name="p", scopes=["ingest"])
    refused = _post(client, plain, {"events": [_event(integration="newco")]}).json()
    assert refused["accepted"] == 0 and "unknown integration" in refused["errors"][0]["message"]
    assert _post(client, creator, {"events": [_event(integration="newco")]}).json()["accepted"] == 1
    assert Integration.objects.filter(slug="newco", environment="production").exists()


def test_a_key_limited_to_some_integrations_cannot_write_others(client, stripe):
    other = Integration.objects.create(name="Mail", slug="mail", environment="production")
    obj, limited = ApiKey.issue(name="l", scopes=["ingest"])
    obj.integrations.set([other])
    data = _post(client, limited, {"events": [_event(), _event(integration="mail")]}).json()
    assert data["accepted"] == 1
    assert data["errors"][0]["message"] == "this API key may not write 'stripe'"


def test_gzip_bodies_are_accepted(client, stripe, key):
    body = gzip.compress(json.dumps({"events": [_event()]}).encode())
    response = _post(client, key, body, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 202 and response.json()["accepted"] == 1


def test_a_gzip_bomb_is_refused_with_413(client, stripe, key, settings):
    settings.UPSTREAM = {**settings.UPSTREAM, "API_MAX_BODY_BYTES": 64 * 1024}
    bomb = gzip.compress(b'{"events": [' + b" " * (50 * 1024 * 1024) + b"]}")
    assert len(bomb) < 64 * 1024
    response = _post(client, key, bomb, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 413
    assert response["Content-Type"] == "application/problem+json"


def test_too_many_events_or_bytes_get_413(client, stripe, key, settings):
    settings.UPSTREAM = {**settings.UPSTREAM, "API_MAX_EVENTS": 3, "API_MAX_BODY_BYTES": 2048}
    assert _post(client, key, {"events": [_event()] * 4}).status_code == 413
    assert _post(client, key, {"events": [_event(error_body="x" * 4000)]}).status_code == 413


def test_malformed_json_says_where_and_wrong_type_gets_415(client, stripe, key):
    broken = _post(client, key, b'{"events": [\n  {"a": 1,,}]}')
    assert broken.status_code == 400
    problem = broken.json()
    assert problem["line"] == 2 and "line 2" in problem["detail"]
    assert _post(client, key, b"events=1", content_type="text/plain").status_code == 415
    assert _post(client, key, b"[]").status_code == 400
    assert _post(client, key, b"\xff\xfe").status_code == 400


def test_an_ingest_key_is_needed(client, stripe):
    _, reader = ApiKey.issue(name="r", scopes=["read"])
    assert _post(client, reader, {"events": []}).status_code == 403
    assert _post(client, "up_XXXXXXXX_nope", {"events": []}).status_code == 401


@pytest.mark.django_db(transaction=True)
def test_a_locked_database_spools_the_batch_and_nothing_is_lost(client, stripe, key, monkeypatch):
    def locked(rows, **kwargs):
        raise OperationalError("database is locked")

    monkeypatch.setattr(events_view.storage, "insert_rows", locked)
    body = {"batch_id": "while-locked", "events": [_event(), _event(status=503)]}
    response = _post(client, key, body)
    assert response.status_code == 202 and response.json()["accepted"] == 2
    assert RequestLog.objects.count() == 0  # in the spool, not the table, yet
    # A resend while the rows wait in the spool is still a duplicate.
    assert _post(client, key, body).json()["duplicate"] is True
    monkeypatch.undo()
    recorder.flush(timeout=30)
    assert RequestLog.objects.filter(integration=stripe).count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_write_lock_held_elsewhere_spools_after_the_short_wait_not_the_long_one(
    client, stripe, key
):
    # Another process holds the write lock for longer than the ingest wait (2 s) but less
    # than the database's busy timeout (20 s): the batch must go to the spool, not wait.
    import threading

    from django.db import connections

    # A first request records the key's use (a write of its own, once a minute).
    assert _post(client, key, {"events": [_event()]}).status_code == 202
    locked, done = threading.Event(), threading.Event()

    def hold() -> None:
        other = connections.create_connection("default")
        try:
            cursor = other.cursor()
            if other.vendor == "sqlite":
                cursor.execute("BEGIN IMMEDIATE")
            else:
                cursor.execute("BEGIN")
                cursor.execute(f"LOCK TABLE {IngestBatch._meta.db_table} IN EXCLUSIVE MODE")
            locked.set()
            done.wait(3 * events_view.LOCK_WAIT_MS / 1000)
            other.rollback()
        finally:
            other.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(30)
        body = {"batch_id": "behind-a-lock", "events": [_event()]}
        response = _post(client, key, body)
        assert response.status_code == 202 and response.json()["accepted"] == 1
        assert not IngestBatch.objects.filter(batch_id="behind-a-lock").exists()
    finally:
        done.set()
        holder.join()
    recorder.flush(timeout=30)
    assert RequestLog.objects.filter(integration=stripe).count() == 2


@pytest.mark.django_db(transaction=True)
def test_real_http_through_live_server(live_server, stripe, key):
    data = gzip.compress(json.dumps({"batch_id": "live", "events": [_event()] * 3}).encode())
    request = urllib.request.Request(
        live_server.url + URL,
        data=data,
        headers={
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 202
        assert json.loads(answer.read())["accepted"] == 3
    bad = urllib.request.Request(
        live_server.url + URL, data=b"{", headers={"Authorization": "Bearer x"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(bad, timeout=30)
    assert refused.value.code == 401
    assert refused.value.headers["Content-Type"] == "application/problem+json"
    assert RequestLog.objects.filter(integration=stripe).count() == 3


def test_token_budgets_come_through_response_headers(client, stripe, key):
    # No new event fields: the server parses what it keeps of response_headers.
    headers = {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": "2026-01-02T03:05:00Z",
        "anthropic-ratelimit-tokens-limit": "40000",
        "anthropic-ratelimit-tokens-remaining": "1200",
        "anthropic-ratelimit-tokens-reset": "2026-01-02T03:04:30Z",
        "x-request-secret": "never kept",
    }
    response = _post(client, key, {"events": [_event(response_headers=headers)]})
    assert response.json()["accepted"] == 1
    row = RequestLog.objects.get()
    assert (row.ratelimit_limit, row.ratelimit_remaining) == (50, 49)
    assert (row.token_limit, row.token_remaining) == (40_000, 1_200)
    assert row.token_reset.isoformat() == "2026-01-02T03:04:30+00:00"
    bucket = MetricBucket.objects.filter(integration=stripe, grain="minute", endpoint="").get()
    assert (bucket.ratelimit_remaining_min, bucket.ratelimit_limit) == (1_200, 40_000)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'"latency_ms": NaN', "latency_ms"),
        (b'"latency_ms": Infinity', "latency_ms"),
        (b'"latency_ms": -1', "latency_ms"),
        (b'"status": true', "status"),
        (b'"status": 200.5', "status"),
        (b'"status": 99', "status"),
        (b'"attempt": 0', "attempt"),
        (b'"method": ""', "method"),
        (b'"call_id": "' + b"x" * 33 + b'"', "call_id"),
        (b'"environment": {"a": 1}', "environment"),
        (b'"environment": ["production"]', "environment"),
        (b'"integration": ["stripe"]', "integration"),
        (b'"integration": "  "', "integration"),
    ],
)
def test_bad_values_are_refused_field_by_field(client, stripe, key, raw, field):
    # Python's JSON reader takes NaN and Infinity: they must still be refused.
    event = json.dumps(_event()).encode()[:-1] + b", " + raw + b"}"
    response = _post(client, key, b'{"events": [' + event + b"]}")
    assert response.status_code == 202, response.content
    assert [e["field"] for e in response.json()["errors"]] == [field]


def test_unique_ids_share_one_template_and_secret_paths_are_still_scrubbed(client, key):
    ApiKey.objects.filter(prefix=key[:11]).update(allow_create=True)
    paths = [f"/v1/charges/ch_{n:014d}" for n in range(3)]
    paths.append("/v1/files/sk_live_" + "a1" * 12)  # a secret in a path, scrubbed again here
    events = [_event(integration="pay", url=f"https://api.example.com{p}") for p in paths]
    response = _post(client, key, {"events": events})
    assert response.json()["accepted"] == 4, response.content
    stored = set(RequestLog.objects.values_list("path", flat=True))
    assert "/v1/charges/{id}" in stored and len(stored) == 2
    assert not any("sk_live" in p for p in stored)


def test_a_non_ascii_header_value_is_kept_not_a_500(client, stripe, key):
    headers = {"X-RateLimit-Remaining": "7", "X-RateLimit-Limit": "10", "Deprecation": "é"}
    response = _post(client, key, {"events": [_event(response_headers=headers)]})
    assert response.status_code == 202, response.content
    assert response.json()["accepted"] == 1
    assert RequestLog.objects.get().ratelimit_remaining == 7


def test_batch_ids_are_kept_past_the_clients_spool_lifetime_then_pruned(stripe, key):
    from datetime import timedelta

    from django.utils import timezone
    from upstream_client.ship import MAX_SPOOL_AGE_S

    from api.models import BATCH_ID_RETAIN_DAYS
    from monitoring import retention

    assert timedelta(days=BATCH_ID_RETAIN_DAYS) > timedelta(seconds=MAX_SPOOL_AGE_S)
    owner = ApiKey.objects.get(prefix=key[:11])
    now = timezone.now()
    ages = {"old": BATCH_ID_RETAIN_DAYS + 1, "resendable": MAX_SPOOL_AGE_S / 86_400, "new": 0}
    for name, days in ages.items():
        IngestBatch.objects.create(key=owner, batch_id=name, created=now - timedelta(days=days))
    report = retention.prune(now=now, vacuum=False, pause_s=0)
    assert report.deleted["ingest_batch_ids"] == 1
    assert set(IngestBatch.objects.values_list("batch_id", flat=True)) == {"resendable", "new"}
    # A resend of a batch the client may still hold is still recognised.
    assert events_view.seen(owner, "resendable") == 0


def test_integral_floats_are_integers_as_json_schema_says(client, stripe, key):
    # JSON Schema counts 1914.0 as an integer (schemathesis sends such values): accepted as
    # the integer, while 1.5 stays a 400 naming the field.
    body = {"batch_id": "b-float", "events": [_event(status=200.0)], "dropped": 3.0}
    response = _post(client, key, body)
    assert response.status_code == 202, response.content
    assert RequestLog.objects.get().status == 200
    assert RecorderLoss.objects.get().rows == 3
    response = _post(client, key, {"batch_id": "b-half", "events": [_event(status=200.5)]})
    assert response.json()["errors"][0]["field"] == "status"


class _Killed(BaseException):
    """The worker dying between the batch's commit and its answer (SIGKILL, OOM)."""


def test_a_worker_dying_after_the_commit_loses_no_drop_count(client, stripe, key, monkeypatch):
    # The batch commits and its worker dies before answering: the SDK resends the batch,
    # which is a duplicate. Its drop count must have committed with it, or it is lost.
    stored = events_view.store

    def store_then_die(*args, **kwargs):
        stored(*args, **kwargs)
        raise _Killed

    body = {"batch_id": "b-killed", "events": [_event(), _event()], "dropped": 7}
    monkeypatch.setattr(events_view, "store", store_then_die)
    with pytest.raises(_Killed):
        _post(client, key, body)
    monkeypatch.setattr(events_view, "store", stored)
    response = _post(client, key, body)
    assert response.json() == {"accepted": 2, "rejected": 0, "duplicate": True, "errors": []}
    assert RequestLog.objects.count() == 2
    loss = RecorderLoss.objects.get()
    assert loss.rows == 7 and key not in loss.reason  # the key's prefix, never the key
    # A batch carrying only a drop count (the SDK's, after a full spool) counts it once too.
    _post(client, key, {"batch_id": "b-drops", "events": [], "dropped": 5})
    _post(client, key, {"batch_id": "b-drops", "events": [], "dropped": 5})
    assert sorted(RecorderLoss.objects.values_list("rows", flat=True)) == [5, 7]
