"""Fixtures for the engine's tests: a stopped clock, a real SMTP server, a locked database."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest
import time_machine
from django.db import connection

from tests.monitoring.alerts.alertkit import T0, SmtpSink
from tests.monitoring.probes.probe_server import ProbeTarget


@pytest.fixture
def clock():
    """Time stands still at T0 until the test moves it."""
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


@pytest.fixture
def smtp(settings):
    """An aiosmtpd server receiving what Django's SMTP backend sends."""
    sink = SmtpSink()
    sink.configure(settings)
    sink.start()
    yield sink
    sink.stop()


class DatabaseLock:
    """Another client holding the write lock on the request log, as a long writer would:
    SQLite's exclusive lock, or PostgreSQL's EXCLUSIVE table lock (writers wait, reads go on)."""

    def __init__(self) -> None:
        settings = connection.settings_dict
        if connection.vendor == "sqlite":
            self._conn = sqlite3.connect(settings["NAME"], timeout=5, isolation_level=None)
            self._begin = ["BEGIN EXCLUSIVE"]
        else:
            import psycopg

            self._conn = psycopg.connect(
                dbname=settings["NAME"],
                user=settings["USER"] or None,
                password=settings["PASSWORD"] or None,
                host=settings["HOST"] or None,
                port=settings["PORT"] or None,
                autocommit=True,
            )
            self._begin = ["BEGIN", "LOCK TABLE monitoring_requestlog IN EXCLUSIVE MODE"]

    def __enter__(self) -> DatabaseLock:
        for statement in self._begin:
            self._conn.execute(statement)
        return self

    def __exit__(self, *exc) -> None:
        self._conn.execute("ROLLBACK")

    def close(self) -> None:
        self._conn.close()


@pytest.fixture
def locked_database():
    lock = DatabaseLock()
    yield lock
    lock.close()


def stored_bytes() -> bytes:
    """Everything the database holds, as bytes to search for a secret.

    SQLite: the database file and its WAL, read by another process (opening and closing the
    file here would drop this process's POSIX locks on it, and a later connection elsewhere
    could then delete the WAL under us). PostgreSQL: every row of every table as text.
    """
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        name = Path(connection.settings_dict["NAME"])
        paths = [str(p) for p in (name, name.with_name(name.name + "-wal")) if p.exists()]
        return subprocess.run(["cat", *paths], capture_output=True, check=True).stdout
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT t::text FROM {connection.ops.quote_name(table)} t")  # noqa: S608
            chunks += [row[0] for row in cursor.fetchall()]
    return "\n".join(chunks).encode()


@pytest.fixture
def target():
    """A loopback HTTP server for probes to check."""
    with ProbeTarget() as server:
        yield server


@pytest.fixture
def allowed(settings, target):
    """Allowlist the loopback target, which the SSRF guard otherwise refuses."""
    settings.UPSTREAM = {**settings.UPSTREAM, "PROBE_ALLOW_HOSTS": [target.hostport]}
    return [target.hostport]
