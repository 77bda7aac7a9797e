"""Multi-step probes: sign in, extract, call; token reuse under a sign-in limit; no leaks."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import time_machine
from django.core.management import call_command

from monitoring import recorder
from monitoring.models import Probe, ProbeResult, RequestLog
from monitoring.probes import schedule
from monitoring.probes.forms import ProbeForm, clean_steps
from monitoring.probes.run import forget_tokens, jwt_expiry

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
PASSWORD = "op-password-canary-5e1f"


def _jwt(exp: float, nonce: int) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256'})}.{part({'exp': int(exp), 'n': nonce})}.c2lnbmF0dXJl"


class FakeOpenPanel:
    """OpenPanel's sign-in contract: JWTs good for 15 minutes, 5 sign-ins a minute."""

    def __init__(self) -> None:
        self.signins: list[float] = []
        self.tokens: dict[str, float] = {}
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def reply(self, status: int, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                data = json.loads(self.rfile.read(length) or b"{}")
                now = time.time()
                with fake.lock:
                    recent = [t for t in fake.signins if now - t < 60]
                    if len(recent) >= 5:
                        self.reply(
                            429, {"error": "Too many login attempts. Please try again later."}
                        )
                        return
                    fake.signins.append(now)
                    if data != {"username": "admin", "password": PASSWORD}:
                        self.reply(401, {"error": "Invalid username or password"})
                        return
                    token = _jwt(now + 900, len(fake.signins))
                    fake.tokens[token] = now + 900
                self.reply(200, {"access_token": token})

            def do_GET(self):
                auth = self.headers.get("Authorization", "")
                token = auth.removeprefix("Bearer ")
                with fake.lock:
                    good = fake.tokens.get(token, 0) > time.time()
                if not good:
                    self.reply(401, {"error": "Missing or invalid token"})
                    return
                self.reply(200, {"logged_in_as": "admin"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.hostport = f"127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


STEPS = [
    {
        "name": "sign in",
        "method": "POST",
        "path": "/api/",
        "body": {"username": "admin", "password": "${UPSTREAM_SECRET_OP_PASSWORD}"},
        "extract": {"access_token": "$.access_token"},
        "assertions": {"status": "200"},
    },
    {
        "name": "whoami",
        "path": "/api/whoami",
        "headers": {"Authorization": "Bearer {{access_token}}"},
        "assertions": {"status": "200", "json_path": ["$.logged_in_as exists"]},
    },
]


@pytest.fixture
def openpanel(settings, monkeypatch):
    fake = FakeOpenPanel()
    settings.UPSTREAM = {**settings.UPSTREAM, "PROBE_ALLOW_HOSTS": [fake.hostport]}
    monkeypatch.setenv("UPSTREAM_SECRET_OP_PASSWORD", PASSWORD)
    forget_tokens()
    yield fake
    forget_tokens()
    fake.close()


@pytest.fixture(autouse=True)
def _recorder_flushed():
    yield
    recorder.flush(timeout=10)


@pytest.fixture
def probe(integration, openpanel):
    return Probe.objects.create(
        integration=integration, name="Sign in", url=f"{openpanel.url}/api/", steps=STEPS
    )


def _issued_tokens(fake: FakeOpenPanel) -> list[str]:
    with fake.lock:
        return list(fake.tokens)


@pytest.mark.django_db(transaction=True)
def test_it_signs_in_then_calls_with_the_extracted_token_and_records_each_step(probe, openpanel):
    (result,), _ = schedule.run_now([probe])
    assert result.ok, result.message
    assert "2 steps ok" in result.message
    recorder.flush(timeout=10)
    rows = list(RequestLog.objects.filter(source="probe").order_by("created", "id"))
    assert [(r.method, r.status) for r in rows] == [("POST", 200), ("GET", 200)]


@pytest.mark.django_db(transaction=True)
def test_a_probe_every_minute_signs_in_about_four_times_an_hour(probe, openpanel):
    oks = 0
    with time_machine.travel(T0, tick=True) as traveller:
        for minute in range(60):
            traveller.move_to(T0 + dt.timedelta(minutes=minute))
            (result,), _ = schedule.run_now([Probe.objects.get(pk=probe.pk)])
            oks += result.ok
    assert oks == 60
    assert 4 <= len(openpanel.signins) <= 5


@pytest.mark.django_db(transaction=True)
def test_a_refused_reused_token_is_dropped_and_the_next_run_signs_in_again(probe, openpanel):
    schedule.run_now([probe])
    with openpanel.lock:
        openpanel.tokens.clear()  # the provider revoked it
    (failed,), _ = schedule.run_now([Probe.objects.get(pk=probe.pk)])
    assert not failed.ok
    assert "step 'whoami' failed" in failed.message
    (again,), _ = schedule.run_now([Probe.objects.get(pk=probe.pk)])
    assert again.ok, again.message
    assert len(openpanel.signins) == 2


@pytest.mark.django_db(transaction=True)
def test_a_failing_run_names_the_step(integration, openpanel, monkeypatch):
    monkeypatch.setenv("UPSTREAM_SECRET_OP_PASSWORD", "wrong-password")
    probe = Probe.objects.create(
        integration=integration, name="Sign in", url=f"{openpanel.url}/api/", steps=STEPS
    )
    (result,), _ = schedule.run_now([probe])
    assert not result.ok
    assert result.message.startswith("step 'sign in' failed:")
    assert result.status == 401


@pytest.mark.django_db(transaction=True)
def test_extracted_tokens_and_secrets_never_reach_the_database_or_logs(
    integration, openpanel, caplog
):
    caplog.set_level(logging.DEBUG)
    steps = [
        STEPS[0],
        {**STEPS[1], "assertions": {"status": "200", "body_contains": "nobody"}},
    ]
    probe = Probe.objects.create(
        integration=integration, name="Leaky?", url=f"{openpanel.url}/api/", steps=steps
    )
    for _ in range(3):
        schedule.run_now([Probe.objects.get(pk=probe.pk)])
    recorder.flush(timeout=10)
    tokens = _issued_tokens(openpanel)
    assert tokens
    dump = io.StringIO()
    call_command("dumpdata", "monitoring", stdout=dump)
    text = dump.getvalue() + caplog.text
    for secret in [*tokens, PASSWORD]:
        assert secret not in text
    assert ProbeResult.objects.filter(ok=False).count() == 3
    assert "step 'whoami' failed" in Probe.objects.get(pk=probe.pk).last_message


@pytest.mark.django_db(transaction=True)
def test_a_configured_lifetime_shorter_than_the_jwt_wins(integration, openpanel):
    steps = [{**STEPS[0], "lifetime_s": 150}, STEPS[1]]
    probe = Probe.objects.create(
        integration=integration, name="Short", url=f"{openpanel.url}/api/", steps=steps
    )
    with time_machine.travel(T0, tick=True) as traveller:
        for minute in range(10):
            traveller.move_to(T0 + dt.timedelta(minutes=minute))
            (result,), _ = schedule.run_now([Probe.objects.get(pk=probe.pk)])
            assert result.ok, result.message
    # Reused for 150 s minus the 60 s margin: a sign-in every other minute.
    assert len(openpanel.signins) == 5


def test_jwt_expiry_is_read_without_verifying():
    assert jwt_expiry(_jwt(1_900_000_000, 1)) == 1_900_000_000
    assert jwt_expiry("not-a-jwt") is None
    assert jwt_expiry("a.!!!.c") is None


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ({"path": "/"}, "JSON list"),
        ([{"path": "/", "headers": {"Authorization": "Bearer {{token}}"}}], "{{token}}"),
        ([{"path": "/", "bogus": 1}], "unknown keys bogus"),
        ([{"path": "/", "method": "BREW"}], "use one of"),
        ([{"path": "/", "extract": {"t": "access_token"}}], "extract t"),
        ([{"path": "/", "body": {"p": "${HOME}"}}], "may not be referenced"),
        ([{"path": "/", "headers": {"Authorization": "Bearer abc"}}], "environment variable"),
        ([{"path": "/", "lifetime_s": -1}], "lifetime_s"),
        ([{"path": "relative"}], "starts with /"),
        ([{"path": "/"}] * 6, "At most 5"),
    ],
)
def test_bad_steps_are_a_form_error_naming_the_problem(steps, message):
    from django import forms

    with pytest.raises(forms.ValidationError) as caught:
        clean_steps(steps)
    assert message in " ".join(caught.value.messages)


@pytest.mark.django_db
def test_the_probe_form_accepts_sign_in_steps(integration, openpanel):
    data = {
        "integration": integration.pk, "name": "OpenPanel", "method": "GET",
        "url": f"{openpanel.url}/api/", "headers": "{}", "body": "",
        "steps": json.dumps(STEPS), "interval_s": 60, "timeout_s": 5, "assertions": "{}",
        "fail_threshold": 2, "recover_threshold": 2, "enabled": "on",
    }  # fmt: skip
    form = ProbeForm(data)
    assert form.is_valid(), form.errors
    probe = form.save()
    assert probe.steps[1]["headers"] == {"Authorization": "Bearer {{access_token}}"}
    assert probe.kind == "http"
