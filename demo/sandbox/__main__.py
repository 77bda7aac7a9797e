"""Command line: run the fake provider until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from demo.sandbox.server import Sandbox, SandboxConfig


def _window(text: str) -> tuple[float, float]:
    try:
        start, length = (float(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:SECONDS, got {text!r}") from None
    if start < 0 or length <= 0:
        raise argparse.ArgumentTypeError("START must be >= 0 and SECONDS > 0")
    return start, length


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, serve, and return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m demo.sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--latency-scale", type=float, default=1.0)
    parser.add_argument("--error-rate", type=float, default=0.01)
    parser.add_argument("--quota", type=int, default=600, help="requests per key per minute")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    parser.add_argument(
        "--tls-port",
        type=int,
        default=None,
        help="also serve TLS here (0 picks a free port), with a CA made at start-up",
    )
    parser.add_argument(
        "--ca-file", default=None, help="write the TLS port's CA certificate here, for clients"
    )
    parser.add_argument(
        "--outage",
        action="append",
        default=[],
        type=_window,
        metavar="START:SECONDS",
        help="answer 503 to everything from START seconds after start, for SECONDS (repeatable)",
    )
    args = parser.parse_args(argv)

    config = SandboxConfig(
        seed=args.seed,
        host=args.host,
        port=args.port,
        latency_scale=args.latency_scale,
        error_rate=args.error_rate,
        quota=args.quota,
        verbose=args.verbose,
        outage_windows=tuple(args.outage),
        tls_port=args.tls_port,
        ca_file=args.ca_file,
    )
    if args.ca_file and args.tls_port is None:
        parser.error("--ca-file needs --tls-port")
    stop = threading.Event()
    # Handlers only set the event: shutting the server down inside one could deadlock.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with Sandbox(config) as sandbox:
        if sandbox.ca is None:
            print(f"sandbox listening on {sandbox.url}", flush=True)
        else:
            shown = f" (CA certificate in {args.ca_file})" if args.ca_file else ""
            print(f"sandbox listening on {sandbox.url} and {sandbox.tls_url}{shown}", flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
