"""Fake third-party API for demo traffic and loopback tests (no Django; TLS needs cryptography)."""

from __future__ import annotations

from demo.sandbox.server import RecordedRequest, Sandbox, SandboxConfig

__all__ = ["RecordedRequest", "Sandbox", "SandboxConfig"]
