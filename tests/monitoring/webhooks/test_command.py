"""manage.py add_webhook: the receiving path alone on the last line, clear errors otherwise."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from monitoring.models import AuditLog, WebhookEndpoint

pytestmark = pytest.mark.django_db


def _run(*args: str) -> list[str]:
    out = StringIO()
    call_command("add_webhook", *args, stdout=out)
    return out.getvalue().splitlines()


def test_it_creates_an_endpoint_and_prints_the_path_last(integration, monkeypatch):
    monkeypatch.setenv("UPSTREAM_SECRET_PAUBOX_HOOK", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    lines = _run(
        "--integration", "paubox", "--environment", "production", "--scheme", "standard",
        "--secret-env", "UPSTREAM_SECRET_PAUBOX_HOOK", "--name", "Events",
    )  # fmt: skip
    endpoint = WebhookEndpoint.objects.get()
    assert lines[-1] == f"/hooks/{endpoint.token}/"
    assert len(endpoint.token) >= 32
    assert (endpoint.scheme, endpoint.name, endpoint.integration) == (
        "standard",
        "Events",
        integration,
    )
    [secret] = endpoint.secrets.all()
    assert secret.reference == "${UPSTREAM_SECRET_PAUBOX_HOOK}" and secret.encrypted == ""
    output = "\n".join(lines)
    assert "MfKQ9r8" not in output and secret.fingerprint in output
    entry = AuditLog.objects.get(action="create", target_type="monitoring.WebhookEndpoint")
    assert entry.actor == "add_webhook" and endpoint.token not in str(entry.after)


def test_a_secret_url_endpoint_needs_no_secret(integration):
    lines = _run("--integration", "paubox", "--environment", "production", "--scheme", "none")
    assert lines[-1] == WebhookEndpoint.objects.get().path


def test_generic_hmac_takes_its_header(integration, monkeypatch):
    monkeypatch.setenv("UPSTREAM_SECRET_G", "generic")
    _run(
        "--integration", "paubox", "--environment", "production", "--scheme", "hmac_sha256",
        "--secret-env", "UPSTREAM_SECRET_G", "--header", "X-Paubox-Signature",
        "--encoding", "base64", "--timestamp-header", "X-Paubox-Timestamp",
    )  # fmt: skip
    endpoint = WebhookEndpoint.objects.get()
    assert (endpoint.header_name, endpoint.signature_encoding, endpoint.timestamp_header) == (
        "X-Paubox-Signature",
        "base64",
        "X-Paubox-Timestamp",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--integration", "nope", "--environment", "production", "--scheme", "none"],
         "No integration 'nope' in production"),
        (["--integration", "paubox", "--environment", "moon", "--scheme", "none"],
         "--environment 'moon'"),
        (["--integration", "paubox", "--environment", "production", "--scheme", "rot13"],
         "--scheme 'rot13': use one of standard, svix"),
        (["--integration", "paubox", "--environment", "production", "--scheme", "stripe"],
         "give --secret-env NAME"),
        (["--integration", "paubox", "--environment", "production", "--scheme", "none",
          "--secret-env", "UPSTREAM_SECRET_X"], "takes no secret"),
        (["--integration", "paubox", "--environment", "production", "--scheme", "github",
          "--secret-env", "DATABASE_URL"], "of Upstream itself"),
        (["--integration", "paubox", "--environment", "production", "--scheme", "github",
          "--secret-env", "HOME"], "may not be referenced"),
        (["--integration", "paubox", "--environment", "production", "--scheme", "hmac_sha256",
          "--secret-env", "UPSTREAM_SECRET_X"], "header name is required"),
        (["--integration", "paubox", "--environment", "production", "--scheme", "hmac_sha256",
          "--secret-env", "UPSTREAM_SECRET_X", "--header", "X-S", "--encoding", "rot13"],
         "hex or base64"),
    ],
)  # fmt: skip
def test_bad_arguments_are_explained_and_nothing_is_created(integration, args, message):
    with pytest.raises(CommandError, match=message.replace("(", r"\(")):
        _run(*args)
    assert not WebhookEndpoint.objects.exists()
