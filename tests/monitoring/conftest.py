"""Fixtures for the engine's tests: a stopped clock and a real SMTP server on loopback."""

from __future__ import annotations

import pytest
import time_machine

from tests.monitoring.alertkit import T0, SmtpSink


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
