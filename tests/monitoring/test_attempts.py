"""The row contract: every source's attempts become rows through one builder and one policy."""

from __future__ import annotations

import io
import json
import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import call_command

from monitoring import attempts, recorder
from monitoring.attempts import Attempt
from monitoring.client import MonitoredClient
from monitoring.models import AuditLog, Integration, Probe, RequestLog
from tests.monitoring.conftest import stored_bytes

# Not shaped like a credential (short, dashed): only the redaction name can catch it.
SECRET = "ref-" + secrets.token_hex(6)
ACCOUNT = f"/v1/accounts/acme42?partner_ref={SECRET}&page=2"


class _Partner(BaseHTTPRequestHandler):
    """A provider whose account page takes a partner reference in the query. Its sign-in
    page redirects there with the reference filled in, as partner and signed URLs do: so a
    probe can call the page without the secret being in the probe's own (stored) URL."""

    protocol_version = "HTTP/1.1"
    paths: list[str]

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.paths.append(self.path)
        if self.path == "/v1/partner/sign-in":
            self.send_response(302)
            self.send_header("Location", ACCOUNT)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"id": "acme42", "object": "account"}).encode()
        self.send_response(200 if self.path == ACCOUNT else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def partner(settings) -> Iterator[tuple[str, list[str]]]:
    """The provider on loopback, allowlisted for probes; yields its URL and the paths asked."""
    handler = type("Handler", (_Partner,), {"paths": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hostport = f"127.0.0.1:{server.server_address[1]}"
    settings.UPSTREAM = {**settings.UPSTREAM, "PROBE_ALLOW_HOSTS": [hostport]}
    yield f"http://{hostport}", handler.paths
    server.shutdown()
    server.server_close()


@pytest.fixture
def recording(transactional_db, tmp_path):
    attempts.clear_policies()  # ids are reused once the test database is emptied
    recorder.configure(spool_dir=tmp_path / "spool", busy_timeout_ms=200)
    yield
    recorder.configure()  # back to the settings' limits, flushing first


@pytest.fixture
def acme(transactional_db) -> Iterator[Integration]:
    attempts.clear_policies()
    yield Integration.objects.create(
        name="Acme",
        slug="acme",
        environment="production",
        path_templates="/v1/accounts/{account}",
        redact_names="partner_ref",
    )
    attempts.clear_policies()  # the next file's fixtures reuse ids and slugs


# --- done when: one URL, two sources, one template and one redaction --------------------------


def test_a_client_call_and_a_probe_run_of_one_url_share_its_template_and_redaction(
    recording, acme, partner
):
    base, asked = partner
    with MonitoredClient(integration="acme", environment="production") as api:
        assert api.get(base + ACCOUNT).status_code == 200
    probe = Probe.objects.create(
        integration=acme, name="Accounts", url=f"{base}/v1/partner/sign-in"
    )
    assert SECRET not in probe.url
    out = io.StringIO()
    call_command("run_probes", "--probe", str(probe.pk), stdout=out)
    assert "Accounts: ok" in out.getvalue()
    recorder.flush(timeout=30)

    assert asked.count(ACCOUNT) == 2  # both sources really sent the secret
    logged = {row.source: row for row in RequestLog.objects.filter(integration=acme)}
    assert sorted(logged) == ["client", "probe"]
    for row in logged.values():
        assert (row.method, row.status, row.outcome) == ("GET", 200, "ok")
        assert row.path == "/v1/accounts/{account}"
        assert row.query == "partner_ref=[redacted]&page=2"
        assert row.host == base.removeprefix("http://")

    stored = stored_bytes()
    assert b"/v1/accounts/{account}" in stored  # we are reading the right place
    assert SECRET.encode() not in stored


# --- the row builder, source by source ---------------------------------------------------------


def test_a_client_attempt_becomes_a_row_under_its_integrations_policy(acme):
    rules = attempts.policy_for(acme)
    query = rules.redact_query(f"partner_ref={SECRET}&page=2&limit=5")
    assert query == "partner_ref=[redacted]&page=2&limit=5"
    kept = rules.kept_headers(
        [
            (b"X-RateLimit-Limit", b"x-ratelimit-limit", b"100"),
            (b"X-RateLimit-Remaining", b"x-ratelimit-remaining", b"7"),
            (b"Content-Length", b"content-length", b"42"),
            (b"Link", b"link", b'<https://api.acme.test/v1/accounts?cursor=c1>; rel="next"'),
            (b"Set-Cookie", b"set-cookie", b"session=abc"),
            (b"X-Api-Version", b"x-api-version", b"2026-01-01"),
        ]
    )
    assert [name for name, _ in kept] == [
        b"x-ratelimit-limit",
        b"x-ratelimit-remaining",
        b"content-length",
        b"x-api-version",
    ]
    attempt = Attempt(
        acme.pk, "client", 1767225600.0, 12.5, "GET", "https", "api.acme.test", 8443,
        "/v1/accounts/acme42", query, 200, None, 0, None, kept, "c0ffee1", 2, 250.0, None,
        None, None,
    )  # fmt: skip
    row = attempts.to_row(attempt)
    assert set(row) == set(attempts.COLUMNS)
    assert row["created"] == datetime(2026, 1, 1, tzinfo=UTC)
    assert (row["integration_id"], row["source"]) == (acme.pk, "client")
    assert (row["host"], row["path"]) == ("api.acme.test:8443", "/v1/accounts/{account}")
    assert row["query"] == "partner_ref=[redacted]&page=2&limit=5"
    assert (row["status"], row["outcome"], row["latency_ms"]) == (200, "ok", 12.5)
    assert (row["response_bytes"], row["ratelimit_remaining"], row["api_version"]) == (
        42,
        7,
        "2026-01-01",
    )
    assert (row["call_id"], row["attempt"], row["backoff_ms"]) == ("c0ffee1", 2, 250.0)


def test_a_client_failure_is_parsed_from_the_scrubbed_body_and_capped(acme):
    rules = attempts.policy_for(acme)
    payload = {"error": {"code": "bad_ref", "message": f"partner_ref={SECRET} is unknown"}}
    body, mime = rules.scrub_body(
        json.dumps({**payload, "pad": "x" * 5000}).encode(), "application/json; charset=latin-1"
    )
    assert SECRET not in body and mime == "application/json"
    attempt = Attempt(
        acme.pk, "client", 1767225600.0, 80.0, "POST", "https", "api.acme.test", None,
        "/v1/accounts", None, 422, None, 12, 5100, None, "c0ffee2", 1, 0.0, None, body, mime,
    )  # fmt: skip
    row = attempts.to_row(attempt)
    assert (row["host"], row["outcome"]) == ("api.acme.test", "client_error")
    assert row["error_code"] == "bad_ref"
    assert row["error_message"] == "partner_ref=[redacted] is unknown"
    assert len(row["error_body"]) == attempts.ERROR_BODY_CAP


def test_a_probe_attempt_gets_the_same_policy_as_the_client(acme):
    attempt = attempts.from_fields(
        integration_id=acme.pk,
        source="probe",
        method="get",
        url=f"https://ops:hunter2@api.acme.test:8443{ACCOUNT}",
        status=503,
        latency_ms=30.0,
        response_headers={"Retry-After": "5", "Set-Cookie": "session=abc"},
        error_message=f"503 from partner_ref={SECRET}",
        created=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert SECRET not in repr(attempt) and "hunter2" not in repr(attempt)
    row = attempts.to_row(attempt)
    assert (row["source"], row["method"], row["outcome"]) == ("probe", "GET", "server_error")
    assert (row["host"], row["path"]) == ("api.acme.test:8443", "/v1/accounts/{account}")
    assert row["query"] == "partner_ref=[redacted]&page=2"
    assert row["retry_after_s"] == 5
    assert row["error_message"] == "503 from partner_ref=[redacted]"
    assert row["created"] == datetime(2026, 1, 1, tzinfo=UTC)


def test_fields_a_source_parsed_itself_win_and_are_scrubbed_and_capped(acme):
    row = attempts.to_row(
        attempts.from_fields(
            integration=acme,
            source="ingest",
            method="GET",
            host="api.acme.test",
            path="/v1/accounts/{account}",
            query=f"partner_ref={SECRET}",
            status=429,
            latency_ms=3.0,
            ratelimit_remaining=0,
            error_code=f"partner_ref={SECRET} " + "x" * 200,
            api_version="v" * 100,
            response_headers={"X-RateLimit-Remaining": "9"},
        )
    )
    assert (row["path"], row["query"]) == ("/v1/accounts/{account}", "partner_ref=[redacted]")
    assert row["ratelimit_remaining"] == 0
    assert row["error_code"].startswith("partner_ref=[redacted]")
    assert (len(row["error_code"]), len(row["api_version"])) == (100, 64)


def test_a_credential_the_path_template_keeps_is_scrubbed_from_the_path(acme):
    rules = attempts.policy_for(acme)
    assert rules.template("/v1/hooks/token=s3cr3t/deliveries") == "/v1/hooks/[redacted]/deliveries"
    assert rules.template("/v1/accounts/acme42") == "/v1/accounts/{account}"


def test_an_attempt_of_an_integration_not_known_yet_carries_its_slug(transactional_db):
    attempts.clear_policies()
    key = ("later", "staging", "https://api.later.test")
    attempt = Attempt(
        key, "client", 1767225600.0, 1.0, "GET", "https", "api.later.test", None, "/v1/x/7",
        None, 200, None, None, None, None, "c1", 1, 0.0, None, None, None,
    )  # fmt: skip
    row = attempts.to_row(attempt)
    assert row["integration_id"] is None and row[attempts.INTEGRATION_KEY] == key
    assert row["path"] == "/v1/x/{id}"
    # Once the writer has resolved it, rows still queued under the slug get its id.
    rules = attempts.policy_for("later", "staging", "https://api.later.test")
    assert attempts.to_row(attempt)["integration_id"] == rules.id is not None


def test_a_finished_row_gets_its_defaults_and_caps_and_must_have_the_required_columns():
    row = attempts.to_row(
        {
            "created": datetime(2026, 1, 1, tzinfo=UTC),
            "integration_id": 1,
            "method": "GET",
            "host": "h" * 300,
            "path": "/",
            "outcome": "ok",
            "latency_ms": 1.0,
        }
    )
    assert set(row) == set(attempts.COLUMNS)
    assert (len(row["host"]), row["attempt"], row["query"]) == (255, 1, "")
    with pytest.raises(ValueError, match="row lacks latency_ms"):
        attempts.to_row({"created": None, "integration_id": 1, "method": "GET", "host": "h"})


def test_from_fields_builds_a_redacted_row_from_a_url_and_headers(integration):
    built = attempts.to_row(
        attempts.from_fields(
            integration_id=integration.pk,
            source="probe",
            method="get",
            url="https://bot:hunter2@api.paybox.test/v1/users/ada@example.com/keys?api_key=s3cr3t&x=1",
            status=429,
            latency_ms=80.0,
            response_headers={
                "Set-Cookie": "session=abc",
                "Retry-After": "7",
                "X-RateLimit-Limit": "100",
                "X-RateLimit-Remaining": "0",
            },
            error_body=(
                b'{"error": {"code": "rate_limited", "message": "Slow down", "token": "t0k3n"}}'
            ),
            content_type="application/json",
        )
    )
    assert (built["scheme"], built["host"]) == ("https", "api.paybox.test")
    assert built["path"] == "/v1/users/{email}/keys"
    assert built["query"] == "api_key=[redacted]&x=1"
    assert (built["method"], built["source"], built["outcome"]) == ("GET", "probe", "client_error")
    assert (built["retry_after_s"], built["ratelimit_remaining"]) == (7, 0)
    assert (built["error_code"], built["error_message"]) == ("rate_limited", "Slow down")
    assert "t0k3n" not in built["error_body"]
    assert "hunter2" not in str(built)


def test_from_fields_refuses_unknown_fields_and_a_missing_integration():
    with pytest.raises(TypeError, match="unknown fields: colour"):
        attempts.from_fields(
            integration_id=1, method="GET", host="h", path="/", latency_ms=1, colour=1
        )
    with pytest.raises(TypeError, match="integration"):
        attempts.from_fields(method="GET", host="h", path="/", latency_ms=1)


# --- the policy: one per integration, refreshed by the writer -----------------------------------


def test_every_source_shares_one_policy_per_integration(acme):
    by_slug = attempts.policy_for("acme", "production")
    assert attempts.policy_for(acme) is by_slug
    assert attempts.policy(acme.pk) is by_slug
    assert (by_slug.id, by_slug.ident, by_slug.redact_names) == (acme.pk, acme.pk, ("partner_ref",))


def test_admin_edits_reach_the_policy_at_the_next_refresh(acme):
    rules = attempts.policy_for("acme", "production")
    attempts.refresh_policies(max_age=0)  # one just ran: the next is not due for a while
    Integration.objects.filter(pk=acme.pk).update(
        path_templates="/v1/accounts/{account_id}", redact_names="page", require_https=False
    )
    attempts.refresh_policies()  # not yet due: the writer asks on every wake
    assert rules.template("/v1/accounts/acme42") == "/v1/accounts/{account}"
    attempts.refresh_policies(max_age=0)
    assert rules.template("/v1/accounts/acme42") == "/v1/accounts/{account_id}"
    assert rules.redact_query("partner_ref=1&page=2") == "partner_ref=1&page=[redacted]"
    assert rules.require_https is False


def test_an_integration_deleted_meanwhile_is_created_again_only_by_the_next_call(
    recording, acme, partner
):
    base, _ = partner
    rules = attempts.policy_for("acme", "production")
    acme.delete()
    attempts.refresh_policies(max_age=0)
    attempts.refresh_policies(max_age=0)
    # Deleted on purpose: a refresh does not bring it back while nothing calls.
    assert not Integration.objects.filter(slug="acme").exists()
    assert (rules.id, rules.ident) == (None, ("acme", "production", ""))
    assert AuditLog.objects.filter(action="integration.auto_created").count() == 0

    with MonitoredClient(integration="acme", environment="production") as api:
        assert api.get(base + ACCOUNT).status_code == 200
    recorder.flush(timeout=30)
    again = Integration.objects.get(slug="acme", environment="production")
    assert RequestLog.objects.filter(integration=again).count() == 1
    assert AuditLog.objects.filter(action="integration.auto_created").count() == 1
    attempts.refresh_policies(max_age=0)
    assert (rules.id, rules.ident) == (again.pk, again.pk)
    assert rules.templates == ()
    assert attempts.policy(again.pk) is rules


def test_a_probe_of_a_deleted_integration_falls_back_to_the_defaults(acme):
    pk = acme.pk
    acme.delete()
    rules = attempts.policy(pk)
    assert (rules.id, rules.templates, rules.redact_names) == (pk, (), ())
    assert attempts.policy(pk) is rules  # asked once, not for every row
