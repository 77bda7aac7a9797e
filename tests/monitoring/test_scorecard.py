"""The scorecard, graded from traffic made through the real client against a loopback provider.

Each check gets a passing, a warning and a failing scenario (key hygiene's warning needs key
fingerprints from the caller's side, so it has a passing and a failing one here).
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable
from datetime import timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trustme
from django.utils import timezone

from monitoring import attempts, recorder, scorecard
from monitoring.client import MonitoredClient, RetryPolicy
from monitoring.models import (
    AlertRule,
    Environment,
    Grade,
    Integration,
    Notification,
    NotificationStatus,
    Probe,
    RuleKind,
    Scorecard,
)

KEY = {"Authorization": "Bearer sk_test_scorecard"}
Reply = tuple[int, dict[str, str], bytes]


def ok_reply(method: str, path: str) -> Reply:
    return 200, {"Content-Type": "application/json"}, b'{"ok": true}'


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status, headers, body = self.server.provider.reply(self.command, self.path)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _handle


class Provider:
    """A loopback API whose answers a test sets with ``reply``; https with a test CA."""

    def __init__(self, tls: ssl.SSLContext | None) -> None:
        self.reply: Callable[[str, str], Reply] = ok_reply
        self.tls = tls
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.provider = self
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def https(ca):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    provider = Provider(context)
    provider.trust = ca.configure_trust  # for the client's context
    yield provider
    provider.close()


@pytest.fixture
def http():
    provider = Provider(None)
    yield provider
    provider.close()


@pytest.fixture
def recording(transactional_db, tmp_path):
    attempts.clear_policies()
    recorder.configure(spool_dir=tmp_path / "spool", busy_timeout_ms=200)
    yield recorder
    recorder.flush(timeout=30)


def make(slug: str = "acme", **fields) -> Integration:
    environment = fields.pop("environment", Environment.PRODUCTION)
    # update_or_create: a previous test's last queued attempt may have re-created it after
    # that test's flush (the writer creates integrations it does not know).
    integration, _ = Integration.objects.update_or_create(
        slug=slug, environment=environment, defaults={"name": slug.title(), **fields}
    )
    return integration


def client(provider: Provider, integration: Integration, **options) -> MonitoredClient:
    verify: ssl.SSLContext | bool = True
    if provider.tls is not None:
        verify = ssl.create_default_context()
        provider.trust(verify)
    options.setdefault("headers", KEY)
    return MonitoredClient(
        integration=integration.slug,
        environment=integration.environment,
        base_url=provider.url,
        verify=verify,
        **options,
    )


def grade_of(integration: Integration, key: str) -> scorecard.Result:
    recorder.flush(timeout=30)
    report = scorecard.compute(integration)
    return next(r for r in report.results if r.key == key)


def get_n(provider, integration, n: int = 25, path: str = "/v1/items/{i}", **options) -> None:
    with client(provider, integration, **options) as api:
        for i in range(n):
            api.get(path.format(i=i))


def answers(*special: tuple[int, Reply]) -> Callable[[str, str], Reply]:
    """A reply function: the n-th request (0-based) gets its special answer, others 200."""
    seen = {"n": 0}
    table = dict(special)
    lock = threading.Lock()

    def reply(method: str, path: str) -> Reply:
        with lock:
            n = seen["n"]
            seen["n"] += 1
        return table.get(n, ok_reply(method, path))

    return reply


def error(status: int, code: str | None = None, **headers: str) -> Reply:
    if code:
        body = json.dumps({"error": {"code": code, "message": "as asked"}}).encode()
        return status, {"Content-Type": "application/json", **headers}, body
    return status, {"Content-Type": "text/plain", **headers}, b"as asked"


# --- 1. HTTPS everywhere ------------------------------------------------------------------------


def test_https_passes_when_every_call_is_https_and_http_is_refused(recording, https):
    acme = make(require_https=True)
    get_n(https, acme)
    assert grade_of(acme, "https").grade == Grade.PASS


def test_https_warns_when_plain_http_would_be_accepted(recording, https):
    acme = make(require_https=False)
    get_n(https, acme)
    result = grade_of(acme, "https")
    assert result.grade == Grade.WARN
    assert "accepts plain http" in result.evidence


def test_https_fails_on_plain_http_calls(recording, http):
    acme = make(require_https=False)
    get_n(http, acme)
    result = grade_of(acme, "https")
    assert result.grade == Grade.FAIL
    assert result.evidence.startswith("25 of 25 sampled calls used plain http")


# --- 2. Errors handled --------------------------------------------------------------------------


def test_errors_pass_when_failures_carry_codes(recording, https):
    acme = make()
    https.reply = answers(*[(i, error(404, "resource_missing")) for i in range(5)])
    get_n(https, acme)
    assert grade_of(acme, "errors").grade == Grade.PASS


def test_errors_warn_when_failures_carry_no_code(recording, https):
    acme = make()
    https.reply = answers(*[(i, error(500)) for i in range(5)])
    get_n(https, acme)
    result = grade_of(acme, "errors")
    assert result.grade == Grade.WARN
    assert "0 % of 5 failures" in result.evidence


def test_errors_fail_when_401s_are_retried(recording, https):
    acme = make()
    https.reply = lambda method, path: (
        error(401, "invalid_key") if "secret" in path else ok_reply(method, path)
    )
    get_n(https, acme, 20)
    retry_401 = RetryPolicy(max_attempts=2, backoff=0.001, jitter=None, retry_on={401})
    get_n(https, acme, 3, path="/v1/secret/{i}", retry=retry_401)
    result = grade_of(acme, "errors")
    assert result.grade == Grade.FAIL
    assert "3× after 401" in result.evidence


# --- 3. Retries with backoff --------------------------------------------------------------------


def test_retries_pass_with_no_retry_needed(recording, https):
    acme = make()
    get_n(https, acme)
    assert grade_of(acme, "retries").grade == Grade.PASS


def test_retries_warn_on_immediate_retries(recording, https):
    acme = make()
    https.reply = answers((0, error(503)), (2, error(503)))
    immediate = RetryPolicy(max_attempts=2, backoff=0, jitter=None)
    get_n(https, acme, retry=immediate)
    result = grade_of(acme, "retries")
    assert result.grade == Grade.WARN
    assert result.figures["immediate"] == 2


def test_retries_fail_on_a_retry_storm(recording, https):
    acme = make()
    https.reply = lambda method, path: error(503)
    storm = RetryPolicy(max_attempts=3, backoff=0.001, jitter=None)
    get_n(https, acme, 10, retry=storm)
    result = grade_of(acme, "retries")
    assert result.grade == Grade.FAIL
    assert result.figures["storm_minutes"] >= 1


# --- 4. Rate limits respected -------------------------------------------------------------------


def limited(remaining: int) -> Reply:
    return 200, {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": str(remaining)}, b"{}"


def test_rate_limits_pass_with_headroom_and_no_429(recording, https):
    acme = make()
    https.reply = lambda method, path: limited(90)
    get_n(https, acme)
    assert grade_of(acme, "rate_limits").grade == Grade.PASS


def test_rate_limits_warn_when_the_quota_ran_low(recording, https):
    acme = make()
    https.reply = lambda method, path: limited(5)
    get_n(https, acme)
    result = grade_of(acme, "rate_limits")
    assert result.grade == Grade.WARN
    assert "lowest headroom was 5 %" in result.evidence


def test_rate_limits_fail_on_many_429s(recording, https):
    acme = make()
    https.reply = answers(*[(i, error(429, "rate_limited")) for i in range(5)])
    get_n(https, acme)
    result = grade_of(acme, "rate_limits")
    assert result.grade == Grade.FAIL
    assert result.evidence.startswith("5 of 25 calls answered 429")


# --- 5. Pagination ------------------------------------------------------------------------------

BIG = (200, {"Content-Type": "application/json"}, b"[" + b"0," * 150_000 + b"0]")


def test_pagination_passes_when_lists_are_paged(recording, https):
    acme = make()
    https.reply = lambda method, path: BIG
    get_n(https, acme, path="/v1/items?limit=100&page={i}")
    assert grade_of(acme, "pagination").grade == Grade.PASS


def test_pagination_warns_on_a_few_large_unpaged_lists(recording, https):
    acme = make()
    https.reply = answers((0, BIG), (1, BIG))
    get_n(https, acme)
    result = grade_of(acme, "pagination")
    assert result.grade == Grade.WARN
    assert result.figures["unpaged_large"] == 2


def test_pagination_fails_on_many_large_unpaged_lists(recording, https):
    acme = make()
    https.reply = lambda method, path: BIG
    get_n(https, acme, path="/v1/items")
    assert grade_of(acme, "pagination").grade == Grade.FAIL


# --- 6. Versioning ------------------------------------------------------------------------------


def versioned(version: str, **headers: str) -> Callable[[str, str], Reply]:
    return lambda method, path: (200, {"API-Version": version, **headers}, b"{}")


def test_versioning_passes_on_the_expected_version(recording, https):
    acme = make(expected_api_version="2024-06-01")
    https.reply = versioned("2024-06-01")
    get_n(https, acme)
    assert grade_of(acme, "versioning").grade == Grade.PASS


def test_versioning_warns_on_version_drift(recording, https):
    acme = make(expected_api_version="2024-06-01")
    https.reply = versioned("2025-01-01")
    get_n(https, acme)
    result = grade_of(acme, "versioning")
    assert result.grade == Grade.WARN
    assert "version 2025-01-01, not 2024-06-01" in result.evidence


def test_versioning_fails_on_a_deprecated_endpoint_near_its_sunset(recording, https):
    acme = make()
    sunset = format_datetime(timezone.now() + timedelta(days=10), usegmt=True)
    https.reply = versioned("1", Deprecation="true", Sunset=sunset)
    get_n(https, acme, path="/v1/legacy")
    result = grade_of(acme, "versioning")
    assert result.grade == Grade.FAIL
    assert "GET /v1/legacy" in result.evidence


# --- 7. API keys kept safe ----------------------------------------------------------------------


def test_keys_pass_when_keys_travel_in_headers(recording, https):
    acme = make()
    get_n(https, acme)
    assert grade_of(acme, "keys").grade == Grade.PASS


def test_keys_fail_on_a_credential_in_the_query_string(recording, https):
    acme = make()
    get_n(https, acme, 5, path="/v1/items?api_key=sk_live_abcdef{i}")
    result = grade_of(acme, "keys")
    assert result.grade == Grade.FAIL
    assert "api_key" in result.evidence
    assert "sk_live" not in json.dumps(scorecard.compute(acme).as_json())


# --- 8. Least privilege -------------------------------------------------------------------------


def test_least_privilege_passes_without_403s(recording, https):
    acme = make()
    get_n(https, acme)
    assert grade_of(acme, "least_privilege").grade == Grade.PASS


def test_least_privilege_warns_on_an_occasional_403(recording, https):
    acme = make()
    https.reply = answers((3, error(403, "missing_scope")))
    get_n(https, acme)
    assert grade_of(acme, "least_privilege").grade == Grade.WARN


def test_least_privilege_fails_and_names_the_endpoint_needing_a_scope(recording, https):
    acme = make()
    https.reply = lambda method, path: (
        error(403, "missing_scope") if "admin" in path else ok_reply(method, path)
    )
    get_n(https, acme, 20)
    get_n(https, acme, 5, path="/v1/admin/users")
    result = grade_of(acme, "least_privilege")
    assert result.grade == Grade.FAIL
    assert "GET /v1/admin/users" in result.evidence


# --- 9. Input validated -------------------------------------------------------------------------


def test_validation_passes_without_400s(recording, https):
    acme = make()
    get_n(https, acme)
    assert grade_of(acme, "validation").grade == Grade.PASS


def test_validation_warns_on_an_occasional_422(recording, https):
    acme = make()
    https.reply = answers((4, error(422, "invalid_email")))
    get_n(https, acme)
    result = grade_of(acme, "validation")
    assert result.grade == Grade.WARN
    assert "invalid_email" in result.evidence


def test_validation_fails_on_many_400s(recording, https):
    acme = make()
    https.reply = answers(*[(i, error(400, "parameter_missing")) for i in range(5)])
    get_n(https, acme)
    assert grade_of(acme, "validation").grade == Grade.FAIL


# --- 10. Caching --------------------------------------------------------------------------------


def test_caching_passes_on_distinct_requests(recording, https):
    # Identity is the stored template and query: /v1/items/7 and /v1/items/8 are one GET.
    acme = make()
    get_n(https, acme, path="/v1/search?q=term{i}")
    assert grade_of(acme, "caching").grade == Grade.PASS


def test_caching_warns_on_some_identical_requests(recording, https):
    acme = make()
    get_n(https, acme, 17, path="/v1/search?q=term{i}")
    get_n(https, acme, 8, path="/v1/config")
    result = grade_of(acme, "caching")
    assert result.grade == Grade.WARN
    assert result.figures["repeated"] == 7


def test_caching_fails_when_the_same_request_repeats(recording, https):
    acme = make()
    get_n(https, acme, path="/v1/config")
    assert grade_of(acme, "caching").grade == Grade.FAIL


# --- 11. Concurrency and batching ---------------------------------------------------------------


def post_n(provider, integration, n: int) -> None:
    with client(provider, integration) as api:
        for i in range(n):
            api.post("/v1/messages", json={"to": f"user{i}@example.com"})


def test_batching_passes_without_runs_of_writes(recording, https):
    acme = make()
    get_n(https, acme)
    post_n(https, acme, 5)
    assert grade_of(acme, "batching").grade == Grade.PASS


def test_batching_warns_on_a_burst_of_sequential_writes(recording, https):
    acme = make()
    post_n(https, acme, scorecard.BURST_CALLS)
    result = grade_of(acme, "batching")
    assert result.grade == Grade.WARN
    assert "POST /v1/messages" in result.evidence


def test_batching_fails_on_many_bursts(recording, https):
    acme = make()
    post_n(https, acme, scorecard.BURST_CALLS * scorecard.BURSTS_FAIL)
    assert grade_of(acme, "batching").grade == Grade.FAIL


# --- 12. Monitored and alerted ------------------------------------------------------------------


def watch(integration: Integration) -> None:
    Probe.objects.create(integration=integration, name="up", url="https://example.com/")
    AlertRule.objects.create(
        name="auth", kind=RuleKind.AUTH_SPIKE, integration=integration, recipients="ops@example.com"
    )


def test_monitored_passes_with_probe_rules_and_a_delivery(recording, https):
    acme = make()
    watch(acme)
    from monitoring.models import Alert

    rule = AlertRule.objects.get(integration=acme)
    alert = Alert.objects.create(rule=rule, integration=acme, fingerprint="x")
    Notification.objects.create(
        alert=alert,
        kind="firing",
        recipient="ops@example.com",
        status=NotificationStatus.SENT,
        sent_at=timezone.now(),
    )
    assert grade_of(acme, "monitored").grade == Grade.PASS


def test_monitored_warns_when_nothing_was_delivered(recording, https):
    acme = make()
    watch(acme)
    result = grade_of(acme, "monitored")
    assert result.grade == Grade.WARN
    assert "nothing delivered in 30 days" in result.evidence


def test_monitored_fails_without_probe_or_rule(recording, https):
    acme = make()
    assert grade_of(acme, "monitored").grade == Grade.FAIL


# --- 13. Tested in a sandbox --------------------------------------------------------------------


def test_sandbox_passes_when_the_sandbox_integration_saw_traffic(recording, https):
    acme = make()
    sandbox = make(environment=Environment.SANDBOX)
    get_n(https, sandbox, 3)
    assert grade_of(acme, "sandbox").grade == Grade.PASS


def test_sandbox_warns_when_the_sandbox_integration_is_idle(recording, https):
    acme = make()
    make(environment=Environment.STAGING)
    assert grade_of(acme, "sandbox").grade == Grade.WARN


def test_sandbox_fails_without_a_sandbox_integration(recording, https):
    acme = make()
    assert grade_of(acme, "sandbox").grade == Grade.FAIL


# --- the report ---------------------------------------------------------------------------------


def test_too_few_calls_are_not_enough_data(recording, https):
    acme = make()
    get_n(https, acme, 3)
    result = grade_of(acme, "errors")
    assert result.grade == Grade.UNKNOWN
    assert "Only 3 calls" in result.evidence


def test_refresh_stores_one_row_a_day_and_reports_changes_since_last_week(recording, https):
    acme = make()
    now = timezone.now()
    week_ago = scorecard.refresh(acme, now - timedelta(days=8))
    assert Scorecard.objects.filter(integration=acme).count() == 1
    get_n(https, acme, 25, path="/v1/items?api_key=sk_{i}")
    recorder.flush(timeout=30)
    first = scorecard.refresh(acme)
    second = scorecard.refresh(acme)
    assert Scorecard.objects.filter(integration=acme).count() == 2  # today's row replaced
    keys = {c["key"]: c for c in second.changes}
    assert keys["keys"]["was"] == Grade.UNKNOWN and keys["keys"]["now"] == Grade.FAIL
    assert week_ago.letter == "F"  # nothing watches it: monitored and sandbox both fail
    assert first.letter == second.letter
    assert scorecard.latest_grades([acme.pk]) == {acme.pk: second.letter}


def test_overall_grade_is_the_mean_of_graded_checks():
    results = [
        scorecard.Result("a", "A", Grade.PASS, "", ""),
        scorecard.Result("b", "B", Grade.WARN, "", ""),
        scorecard.Result("c", "C", Grade.UNKNOWN, "", ""),
    ]
    assert scorecard.overall(results) == (75, "B")
    assert scorecard.overall(results[2:]) == (None, "—")


# --- the weekly digest --------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_weekly_digest_mails_only_people_who_opted_in_about_what_changed(
    smtp, django_user_model
):
    from monitoring.models import NotificationPreference

    acme = make()
    quiet = make("quiet")
    now = timezone.now()
    scorecard.refresh(acme, now - timedelta(days=8))
    scorecard.refresh(quiet, now - timedelta(days=8))
    Scorecard.objects.filter(integration=acme).update(
        checks=[{"key": "sandbox", "title": "Tested in a sandbox", "grade": "pass"}]
    )
    scorecard.refresh(acme, now)  # sandbox: pass → fail
    scorecard.refresh(quiet, now)  # nothing moved
    keen = django_user_model.objects.create_user("keen", email="keen@example.com")
    NotificationPreference.objects.create(user=keen, scorecard_digest=True)
    other = django_user_model.objects.create_user("other", email="other@example.com")
    NotificationPreference.objects.create(user=other, scorecard_digest=False)
    elsewhere = django_user_model.objects.create_user("elsewhere", email="else@example.com")
    pref = NotificationPreference.objects.create(user=elsewhere, scorecard_digest=True)
    pref.integrations.set([quiet])

    assert scorecard.send_weekly_digest(now) == 1
    (message,) = smtp.messages
    assert message["To"] == "keen@example.com"
    assert message["Subject"] == "[Upstream] Scorecards: 1 integration changed this week"
    text = message.get_body(("plain",)).get_content()
    assert "Tested in a sandbox: pass -> fail" in text
    assert "Quiet" not in text


# --- 14. Webhooks verified (deliveries over real HTTP, signed by standardwebhooks) --------------


@pytest.fixture
def hooks(live_server, recording, monkeypatch):
    from monitoring.webhooks import dedupe
    from tests.monitoring.webhooks.hookkit import KEY

    monkeypatch.setenv("UPSTREAM_SECRETS_KEY", KEY)
    yield live_server.url
    dedupe.stop()


def deliver(base: str, endpoint, n: int, *, secret: str | None, forged: int = 0) -> None:
    import httpx

    from tests.monitoring.webhooks.hookkit import body_of, standard_headers, whsec

    for i in range(n):
        body = body_of("invoice.paid")
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            signing = whsec() if i < forged else secret  # a forger lacks the real secret
            headers |= standard_headers(signing, body)
        httpx.post(f"{base}{endpoint.path}", content=body, headers=headers, timeout=10)


def test_webhooks_pass_when_signed_deliveries_verify(hooks):
    from tests.monitoring.webhooks.hookkit import add_secret, make_endpoint, whsec

    endpoint = make_endpoint("standard")
    secret = whsec()
    add_secret(endpoint, secret)
    deliver(hooks, endpoint, 6, secret=secret)
    result = grade_of(endpoint.integration, "webhooks")
    assert result.grade == Grade.PASS, result.evidence
    assert result.figures == {"unsigned": 0, "failed": 0, "total": 6}


def test_webhooks_warn_on_an_unsigned_endpoint(hooks):
    from tests.monitoring.webhooks.hookkit import make_endpoint

    endpoint = make_endpoint("none")
    deliver(hooks, endpoint, 3, secret=None)
    result = grade_of(endpoint.integration, "webhooks")
    assert result.grade == Grade.WARN
    assert "1 unsigned" in result.evidence


def test_webhooks_fail_when_deliveries_fail_verification(hooks):
    from tests.monitoring.webhooks.hookkit import add_secret, make_endpoint, whsec

    endpoint = make_endpoint("standard")
    secret = whsec()
    add_secret(endpoint, secret)
    deliver(hooks, endpoint, 6, secret=secret, forged=3)
    result = grade_of(endpoint.integration, "webhooks")
    assert result.grade == Grade.FAIL
    assert "3 of 6 deliveries failed verification" in result.evidence


# --- caller-side facts: key fingerprints and the version header (issue 18) -------------------


def test_keys_fail_when_production_and_sandbox_share_a_key(recording, https):
    acme = make()
    sandbox = make(environment=Environment.SANDBOX)
    get_n(https, acme)  # KEY, from client()
    get_n(https, sandbox, 3)
    result = grade_of(acme, "keys")
    assert result.grade == Grade.FAIL
    assert "in production and in sandbox" in result.evidence
    assert "sk_test_scorecard" not in json.dumps(scorecard.compute(acme).as_json())


def test_keys_warn_on_a_key_in_use_for_over_90_days(recording, https):
    from upstream_client.facts import fingerprint

    from monitoring.models import KeySighting

    acme = make()
    get_n(https, acme)
    long_ago = timezone.now() - timedelta(days=120)
    KeySighting.objects.create(
        integration=acme, fingerprint=fingerprint(KEY["Authorization"]), first_seen=long_ago,
        last_seen=long_ago,
    )  # fmt: skip
    result = grade_of(acme, "keys")
    assert result.grade == Grade.WARN
    assert "in use for 120 days" in result.evidence


def test_keys_pass_and_remember_when_a_key_was_first_seen(recording, https):
    from monitoring.models import KeySighting

    acme = make()
    get_n(https, acme)
    assert grade_of(acme, "keys").grade == Grade.PASS
    assert KeySighting.objects.filter(integration=acme).count() == 1


def test_versioning_warns_when_calls_do_not_pin_the_presets_version_header(recording, https):
    acme = make(preset="stripe")
    get_n(https, acme)
    result = grade_of(acme, "versioning")
    assert result.grade == Grade.WARN
    assert "25 of 25 calls sent no Stripe-Version header" in result.evidence


def test_versioning_passes_when_calls_pin_the_version(recording, https):
    acme = make(preset="stripe")
    with client(https, acme, headers={**KEY, "Stripe-Version": "2024-06-20"}) as api:
        for i in range(25):
            api.get(f"/v1/items/{i}")
    assert grade_of(acme, "versioning").grade == Grade.PASS
