"""Settings come from the environment (bad values stop start-up); debug stays on loopback."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from dashboard.env import database_from_url, env_bool, env_int, env_list

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("raw", ["maybe", "2", "yes please", "TRUEISH"])
def test_env_bool_rejects_values_that_are_not_booleans(monkeypatch, raw):
    monkeypatch.setenv("DEBUG", raw)
    with pytest.raises(ImproperlyConfigured, match="DEBUG"):
        env_bool("DEBUG")


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("off", False), ("Yes", True), ("", False)]
)
def test_env_bool_reads_the_usual_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv("FLAG", raw)
    assert env_bool("FLAG", default=not expected) is expected


def test_env_int_rejects_words_and_values_below_the_minimum(monkeypatch):
    monkeypatch.setenv("N", "ten")
    with pytest.raises(ImproperlyConfigured, match="not a whole number"):
        env_int("N", 1)
    monkeypatch.setenv("N", "0")
    with pytest.raises(ImproperlyConfigured, match="minimum"):
        env_int("N", 1, minimum=1)
    monkeypatch.delenv("N")
    assert env_int("N", 7) == 7


def test_env_list_splits_on_commas_and_drops_blanks(monkeypatch):
    monkeypatch.setenv("HOSTS", " a.example, ,b.example ")
    assert env_list("HOSTS") == ["a.example", "b.example"]


def test_database_url_parses_postgres_and_rejects_other_schemes():
    db = database_from_url("postgres://u:p%40ss@db.internal:6543/upstream?sslmode=require")
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "upstream",
        "u",
        "p@ss",
        "db.internal",
        "6543",
    )
    assert db["OPTIONS"] == {"sslmode": "require"}
    with pytest.raises(ImproperlyConfigured, match="scheme"):
        database_from_url("mysql://u@h/db")
    with pytest.raises(ImproperlyConfigured, match="names no database"):
        database_from_url("postgres://u@h/")


PRODUCTION_ENV = {
    "DEBUG": "0",
    "SECRET_KEY": "x7#Kp2!vQm9@Lr4$Tz8^Wn1&Yb6*Hc3(Jd5)Fg0-Sa+Ue=Io;Pl:Mk<Nj>Bh?Vg",
    "ALLOWED_HOSTS": "upstream.example.com",
    "EMAIL_HOST": "smtp.example.com",
}


def _manage(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    # A production-like environment: none of the test session's own switches (the browser
    # tests set DJANGO_ALLOW_ASYNC_UNSAFE, which check --deploy rightly rejects).
    dropped = {"DEBUG", "SECRET_KEY", "ALLOWED_HOSTS"}
    base = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("DJANGO_")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_bad_debug_value_stops_start_up_with_the_variable_named():
    result = _manage(["check"], {"DEBUG": "maybe"})
    assert result.returncode != 0
    assert "DEBUG='maybe' is not a boolean" in result.stderr


def test_production_mode_refuses_the_development_secret_key():
    env = {**PRODUCTION_ENV}
    del env["SECRET_KEY"]
    result = _manage(["check"], env)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_mode_passes_check_deploy_at_warning_level():
    result = _manage(["check", "--deploy", "--fail-level", "WARNING"], PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_task_queue_retry_at_or_below_timeout_is_a_system_error():
    result = _manage(["check"], {"Q_TIMEOUT": "300", "Q_RETRY": "300"})
    assert result.returncode != 0
    assert "upstream.E001" in result.stderr


def test_the_database_is_sqlite_in_wal_mode_unless_database_url_is_set(db):
    from django.conf import settings
    from django.db import connection

    if os.environ.get("DATABASE_URL"):
        assert connection.vendor == "postgresql"
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
    assert settings.DATABASES["default"]["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


def test_email_has_a_timeout():
    from django.conf import settings

    assert settings.EMAIL_TIMEOUT and settings.EMAIL_TIMEOUT > 0


# --- DEBUG answers only on this machine -------------------------------------------------------


@pytest.mark.parametrize("hosts", ["upstream.example.com", "127.0.0.1,upstream.example.com", "*"])
def test_debug_with_a_public_allowed_host_is_a_system_error(hosts):
    result = _manage(["check"], {"DEBUG": "1", "ALLOWED_HOSTS": hosts})
    assert result.returncode != 0
    assert "dashboard.E001" in result.stderr
    assert "DEBUG=0" in result.stderr


def test_debug_on_loopback_passes_the_checks():
    # What `make run` starts with: no DEBUG and no ALLOWED_HOSTS in the environment.
    result = _manage(["check"], {})
    assert result.returncode == 0, result.stderr
    assert "dashboard.E001" not in result.stdout + result.stderr
    loopback = _manage(["check"], {"DEBUG": "1", "ALLOWED_HOSTS": "127.0.0.1,localhost,[::1]"})
    assert loopback.returncode == 0, loopback.stderr


@pytest.mark.parametrize(
    ("host", "client_ip"),
    [
        ("upstream.example.com", "127.0.0.1"),  # a proxy on this machine forwarding the world
        ("127.0.0.1:8000", "203.0.113.5"),  # a remote client naming loopback
        ("localhost", "192.168.1.20"),
        ("", "127.0.0.1"),
    ],
)
def test_while_debug_is_on_only_loopback_is_answered(client, db, settings, host, client_ip):
    settings.DEBUG = True
    settings.ALLOWED_HOSTS = ["*"]
    response = client.get("/no-such-page/", HTTP_HOST=host, REMOTE_ADDR=client_ip)
    assert response.status_code == 403
    assert response["Content-Type"].startswith("text/plain")
    assert "DEBUG=0" in response.content.decode()


@pytest.mark.parametrize(
    ("host", "client_ip"),
    [("127.0.0.1:8000", "127.0.0.1"), ("localhost:8000", "127.0.0.1"), ("[::1]:8000", "::1")],
)
def test_while_debug_is_on_loopback_is_served(client, db, settings, host, client_ip):
    settings.DEBUG = True
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
    response = client.get("/accounts/login/", HTTP_HOST=host, REMOTE_ADDR=client_ip)
    assert response.status_code == 200


def test_with_debug_off_any_allowed_host_is_served(client, db):
    assert client.get("/accounts/login/", REMOTE_ADDR="203.0.113.5").status_code == 200


# --- What signed-in pages and refusals leave behind ---------------------------------------------


def test_signed_in_pages_are_never_cached(client, viewer):
    client.force_login(viewer)
    for url in ["/", "/requests/", "/alerts/"]:
        cache_control = client.get(url)["Cache-Control"]
        assert "private" in cache_control and "no-store" in cache_control, url
        assert "public" not in cache_control
    assert "no-store" in client.get("/", HTTP_HX_REQUEST="true")["Cache-Control"]


def test_a_refusal_is_logged_as_one_line_without_a_traceback(client, outsider, caplog):
    client.force_login(outsider)
    with caplog.at_level(logging.INFO, logger="django.request"):
        assert client.get("/").status_code == 403
    records = [r for r in caplog.records if r.name == "django.request"]
    assert len(records) == 1
    assert records[0].exc_info is None and not records[0].exc_text
    assert records[0].getMessage() == (
        "Forbidden (Permission denied): / (user olga: Your role may not view.)"
    )


def test_django_records_are_printed_once():
    # Django's own console handler (on while DEBUG is) printed each record the root prints.
    assert logging.getLogger("django").handlers == []
    assert logging.getLogger("django").propagate
    assert logging.getLogger().handlers


def _recorder_batch(env: dict[str, str]) -> str:
    result = _manage(
        [
            "shell",
            "--no-imports",
            "-c",
            "from django.conf import settings; print(settings.UPSTREAM['RECORDER_BATCH_SIZE'])",
        ],
        env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_recorder_batch_is_larger_on_postgresql_and_an_operator_may_set_it():
    # Settings only: neither command connects to a database.
    sqlite = {"DATABASE_URL": "", "UPSTREAM_RECORDER_BATCH_SIZE": ""}
    postgres = {
        "DATABASE_URL": "postgres://u@db.internal/upstream",
        "UPSTREAM_RECORDER_BATCH_SIZE": "",
    }
    assert _recorder_batch(sqlite) == "2000"
    assert _recorder_batch(postgres) == "5000"
    assert _recorder_batch({**postgres, "UPSTREAM_RECORDER_BATCH_SIZE": "750"}) == "750"
