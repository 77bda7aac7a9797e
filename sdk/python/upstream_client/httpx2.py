"""Capture for httpx2 (the client under openai 3.x and anthropic 2.x): ``Client``, ``AsyncClient``.

    from openai import OpenAI
    import upstream_client.httpx2
    client = OpenAI(http_client=upstream_client.httpx2.Client(integration="openai"))

The response streams and exceptions are httpx2's own, so the SDK sees what it would
without Upstream.
"""

from __future__ import annotations

from typing import Any

import httpx2

from upstream_client._httpx import lib, wrap_client_transports
from upstream_client.retry import RetryPolicy
from upstream_client.sink import Sink

__all__ = ["AsyncClient", "Client", "Transport"]

_LIB = lib("httpx2")
#: The capturing transport class for httpx2 (``upstream_client.transport`` picks it).
Transport = _LIB.Transport


class Client(httpx2.Client):
    """An ``httpx2.Client`` whose every attempt is captured; see ``upstream_client.Client``."""

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
            self, _LIB, integration, environment, retry, sink, success_bodies
        )


class AsyncClient(httpx2.AsyncClient):
    """An ``httpx2.AsyncClient`` whose every attempt is captured."""

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
            self, _LIB, integration, environment, retry, sink, success_bodies
        )
