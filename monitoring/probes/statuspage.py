"""A status-page probe: read a provider's Atlassian Statuspage JSON and report open incidents."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import TYPE_CHECKING, Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from monitoring.models import FailureReason as Reason
from monitoring.probes.run import (
    USER_AGENT,
    ProbeSpec,
    RunResult,
    _clip,
    _failure,
    _fetch_url,
)

if TYPE_CHECKING:
    import httpx

STATUS_PATH = "/api/v2/status.json"
INCIDENTS_PATH = "/api/v2/incidents/unresolved.json"
# Statuspage's overall indicator; anything but "none" means the provider admits trouble.
QUIET = "none"


def page_root(url: str) -> str:
    """The status page's root, whether given as the page or as one of its JSON URLs."""
    root = url.split("?", 1)[0].rstrip("/")
    for suffix in (STATUS_PATH, INCIDENTS_PATH, "/api/v2"):
        if root.endswith(suffix):
            root = root[: -len(suffix)]
    return root


def parse_incidents(doc: Any) -> list[tuple[str, str, dt.datetime | None]]:
    """(name, link, created) of each unresolved incident, newest first; [] if none or odd."""
    items = doc.get("incidents") if isinstance(doc, dict) else None
    found = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            continue
        if item.get("status") in ("resolved", "postmortem"):
            continue
        link = item.get("shortlink") or item.get("url") or ""
        link = link if isinstance(link, str) and link.startswith(("https://", "http://")) else ""
        created = item.get("created_at")
        when = parse_datetime(created) if isinstance(created, str) else None
        found.append((" ".join(item["name"].split())[:300], link[:500], when))
    far = dt.datetime.min.replace(tzinfo=dt.UTC)
    return sorted(found, key=lambda f: f[2] or far, reverse=True)


def parse_indicator(doc: Any) -> tuple[str, str]:
    """(indicator, description) from status.json; ("", "") when the shape is not Statuspage's."""
    status = doc.get("status") if isinstance(doc, dict) else None
    if not isinstance(status, dict):
        return "", ""
    indicator, description = status.get("indicator"), status.get("description")
    return (
        indicator if isinstance(indicator, str) else "",
        description[:200] if isinstance(description, str) else "",
    )


async def _get_json(client: httpx.AsyncClient, url: str, allowed: list[str]) -> tuple[Any, int]:
    fetched = await _fetch_url(client, "GET", url, None, {"User-Agent": USER_AGENT}, {}, allowed)
    status = fetched.response.status_code
    if status != 200:
        raise _StatusPageError(f"{url} answered {status}", status)
    try:
        return json.loads(fetched.body), status
    except ValueError:
        raise _StatusPageError(f"{url} is not JSON", status) from None


class _StatusPageError(Exception):
    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


async def execute(spec: ProbeSpec, client: httpx.AsyncClient, allowed: list[str]) -> RunResult:
    """Read the status page; an open incident is a degraded run that carries the incident."""
    started_at = timezone.now()
    started = time.perf_counter()
    root = page_root(spec.url)
    try:
        status_doc, _ = await _get_json(client, root + STATUS_PATH, allowed)
        incidents_doc, status = await _get_json(client, root + INCIDENTS_PATH, allowed)
    except _StatusPageError as exc:
        return RunResult(ok=False, started_at=started_at, reason=str(Reason.STATUS),
                         message=_clip(f"status page unreadable: {exc}"), status=exc.status,
                         latency_ms=(time.perf_counter() - started) * 1000, url=spec.url,
                         logged=False)  # fmt: skip
    except Exception as exc:
        failure = _failure(exc, spec.timeout_s)
        return RunResult(ok=False, started_at=started_at, reason=str(failure.reason),
                         message=_clip(f"status page unreachable: {failure}"),
                         latency_ms=(time.perf_counter() - started) * 1000, url=spec.url,
                         outcome=failure.outcome, logged=False)  # fmt: skip
    latency_ms = (time.perf_counter() - started) * 1000
    indicator, description = parse_indicator(status_doc)
    listed = isinstance(incidents_doc, dict) and isinstance(incidents_doc.get("incidents"), list)
    if not indicator and not listed:
        return RunResult(ok=False, started_at=started_at, reason=str(Reason.BODY),
                         message="not an Atlassian Statuspage JSON page", status=status,
                         latency_ms=latency_ms, url=spec.url, logged=False)  # fmt: skip
    incidents = parse_incidents(incidents_doc)
    if incidents:
        name = incidents[0][0]
        more = f" (+{len(incidents) - 1} more)" if len(incidents) > 1 else ""
        message = f"provider reports an incident: {name}{more}"
    elif indicator and indicator != QUIET:
        message = f"provider reports: {description or indicator}"
    else:
        message = description or "all systems operational"
    return RunResult(
        ok=True,
        started_at=started_at,
        degraded=bool(incidents) or (bool(indicator) and indicator != QUIET),
        message=_clip(message),
        status=status,
        latency_ms=latency_ms,
        url=spec.url,
        incident=incidents[0] if incidents else None,
        logged=False,
    )
