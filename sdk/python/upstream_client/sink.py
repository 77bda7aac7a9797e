"""Where captured events go: the Sink protocol and the process-wide default sink."""

from __future__ import annotations

import threading
from typing import Any, Protocol, runtime_checkable

# Imported now, with the package, so that the first call that needs the default sink does
# not read a module from disk on the caller's thread.
from upstream_client.ship import Shipper


@runtime_checkable
class Sink(Protocol):
    """Receives one event dict per HTTP attempt.

    ``submit`` is called on the caller's thread: it must never block on network, disk or a
    database and must never raise.
    """

    def submit(self, event: dict[str, Any]) -> None: ...


_default: Sink | None = None
_lock = threading.Lock()


def default() -> Sink:
    """The process-wide sink: the one set with ``set_default``, else a lazily made Shipper.

    The Shipper reads ``UPSTREAM_URL`` / ``UPSTREAM_API_KEY``; making it starts no network
    or disk work on this thread (its worker thread starts on the first submit).
    """
    global _default
    sink = _default
    if sink is not None:
        return sink
    with _lock:
        if _default is None:
            _default = Shipper()
        return _default


def set_default(sink: Sink | None) -> None:
    """Replace the process-wide sink (``None`` goes back to the lazy Shipper)."""
    global _default
    with _lock:
        _default = sink
