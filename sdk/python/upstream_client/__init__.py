"""upstream-client: capture every call to a third-party HTTP API and ship it to Upstream.

    import upstream_client
    client = upstream_client.Client(integration="stripe")        # an httpx.Client
    client = upstream_client.httpx2.Client(integration="openai")  # an httpx2.Client
    session = upstream_client.requests.Session(integration="twilio")

Each attempt becomes one event (redacted on this side: no request header values, no URL
userinfo, secret query values ``[redacted]``, failure bodies scrubbed) handed to a sink
that never blocks: by default a background shipper to ``UPSTREAM_URL``.
"""

from __future__ import annotations

from typing import Any

import httpx

from upstream_client._capture import Capture, environment_of
from upstream_client._httpx import lib, transport, wrap_client_transports
from upstream_client.retry import RetryPolicy
from upstream_client.sink import Sink

__all__ = ["AsyncClient", "Capture", "Client", "RetryPolicy", "environment_of", "transport"]
__version__ = "0.1.0"


class Client(httpx.Client):
    """An ``httpx.Client`` whose every attempt is captured.

    ``integration`` names the provider (a slug, e.g. "stripe"); ``environment`` is
    production / staging / sandbox (default ``UPSTREAM_ENVIRONMENT``, else production);
    ``retry`` a ``RetryPolicy`` (off by default); ``sink`` where events go (default
    ``upstream_client.sink.default()``); ``success_bodies`` keeps a scrubbed sample of small
    JSON 2xx bodies (for APIs that answer errors with 200). Everything else is httpx's.
    """

    def __init__(
        self,
        *,
        integration: str,
        environment: str | None = None,
        retry: RetryPolicy | None = None,
        sink: Sink | None = None,
        success_bodies: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.capture = wrap_client_transports(
            self, lib("httpx"), integration, environment, retry, sink, success_bodies
        )


class AsyncClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` whose every attempt is captured; see ``Client``."""

    def __init__(
        self,
        *,
        integration: str,
        environment: str | None = None,
        retry: RetryPolicy | None = None,
        sink: Sink | None = None,
        success_bodies: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.capture = wrap_client_transports(
            self, lib("httpx"), integration, environment, retry, sink, success_bodies
        )


def __getattr__(name: str) -> Any:
    # ``upstream_client.httpx2`` / ``.requests`` import their library only when used.
    if name in ("httpx2", "requests"):
        import importlib

        return importlib.import_module(f"upstream_client.{name}")
    raise AttributeError(f"module 'upstream_client' has no attribute {name!r}")
