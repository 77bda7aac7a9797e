"""The row contract: what one HTTP attempt is, each integration's policy, and the one row builder.

Every source of attempts (the in-process client, probes, and the ingest API, OTLP and
webhooks after them) hands the recorder the same thing: an ``Attempt``, a named tuple of
raw facts that is cheap to build on the caller's thread. The recorder's writer thread turns
it into a RequestLog row dict with ``to_row``, the only code that does so, applying the
integration's ``Policy`` (explicit path templates, extra redaction names, the https rule)
whatever the source. Data flows one way: source → ``Attempt`` → recorder → rollup; this
module imports neither the recorder nor the client.

What is done where:

* On the caller's thread (``Policy`` methods, used by the client and ``from_fields``): query
  values whose *name* is a secret become ``[redacted]``; only the response headers the
  parsers read are kept (a ``Link`` only when it announces a deprecation, scrubbed); a
  failure's body and a transport error's message are scrubbed. Request headers and URL
  userinfo are never taken at all.
* On the writer thread (``to_row``): path templating and scrubbing (cached per path),
  value-shape scrubbing of the query, parsing of rate-limit / deprecation / version headers
  and of the (already scrubbed) error payload, caps.

Policies are cached per process by integration id (and by slug for clients that name one),
shared by every source, and reloaded by ``refresh_policies``, which the writer runs; admin
edits of templates, redaction names or the https flag reach new rows within ``REFRESH_S``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from operator import gt, itemgetter
from typing import Any, NamedTuple
from urllib.parse import SplitResult, unquote_plus, urlsplit

import httpx
from django.db import DatabaseError, transaction
from django.utils import timezone

from monitoring import parsing, presets
from monitoring.models import Environment, Integration, Outcome, RequestLog, Source
from monitoring.presets import Preset
from monitoring.redaction import REDACTED, Redactor

__all__ = [
    "COLUMNS",
    "ERROR_BODY_CAP",
    "INTEGRATION_KEY",
    "Attempt",
    "Policy",
    "clear_policies",
    "from_fields",
    "is_loopback",
    "policy",
    "policy_for",
    "refresh_policies",
    "resolve_integration",
    "to_row",
]

logger = logging.getLogger(__name__)

ERROR_BODY_CAP = 2048
REFRESH_S = 30.0
# A row whose integration id was unknown when it was built (the database was away) carries
# this key instead: (slug, environment, base_url); the recorder resolves it before inserting.
INTEGRATION_KEY = "integration_key"


class Attempt(NamedTuple):
    """One HTTP attempt as its source saw it; ``to_row`` makes it a RequestLog row.

    Slots are in the order the client fills them. Text slots arrive scrubbed (``Policy``
    methods do it on the caller's side), so nothing secret waits in the recorder's queue.
    """

    #: The integration's id; while that is not known yet (the database was away when a
    #: client started), its (slug, environment, base_url), which the writer resolves.
    integration: int | tuple[str, str | None, str]
    #: A ``Source`` value: client, ingest, otlp, probe, webhook.
    source: str
    #: When the attempt started: epoch seconds (``time.time()``) or an aware datetime.
    created: float | datetime
    #: To the response headers (or to the failure), in milliseconds.
    latency_ms: float
    #: Upper case, as sent.
    method: str
    #: "http" or "https".
    scheme: str
    #: The host alone: no userinfo, no port.
    host: str
    #: None when the scheme's default; otherwise stored as ``host:port``.
    port: int | None
    #: The raw request path; the writer templates it (``/v1/users/{id}``).
    path: str
    #: The raw query (no "?") with secret-named values already ``[redacted]``; None if none.
    query: str | None
    #: The HTTP status; None on a transport error.
    status: int | None
    #: An ``Outcome`` value, or None to derive it from ``status``.
    outcome: str | None
    #: Bytes sent; None when not known (a streamed upload).
    request_bytes: int | None
    #: Bytes received; None to take the Content-Length from ``headers``.
    response_bytes: int | None
    #: The response headers the parsers read, as (lower-case name, value) byte pairs
    #: (``Policy.kept_headers``), or the SDK's dict of kept str headers (the writer keeps
    #: only what it parses); None if there was no response.
    headers: list[tuple[bytes, bytes]] | dict[str, str] | None
    #: Ties the retries of one call together ("" when the source has none).
    call_id: str
    #: 1 for the first try of a call, 2 for its first retry …
    attempt: int
    #: How long the caller waited before this attempt (backoff or throttle), in ms.
    backoff_ms: float
    #: A transport error's message, scrubbed; None when there is none.
    error_message: str | None
    #: A failure's body as scrubbed text (``Policy.scrub_body``); None when not kept.
    error_body: str | None
    #: The failure body's media type (no charset: the scrubbed text is UTF-8).
    content_type: str | None
    #: Further RequestLog columns a source read itself (error_code, rate limits, …); they
    #: win over what the writer parses. None for the client.
    given: Mapping[str, Any] | None = None


# --- the row's columns ---------------------------------------------------------------------

_FIELDS = [f for f in RequestLog._meta.concrete_fields if not f.primary_key]
COLUMNS: tuple[str, ...] = tuple(f.attname for f in _FIELDS)
_CAPS = (
    *(
        (f.attname, f.max_length)
        for f in _FIELDS
        if getattr(f, "max_length", None) and f.choices is None
    ),
    ("error_body", ERROR_BODY_CAP),
)
_DEFAULTS: dict[str, Any] = {
    "source": Source.CLIENT.value,
    "scheme": "https",
    "query": "",
    "status": None,
    "request_bytes": None,
    "response_bytes": None,
    "error_code": "",
    "error_message": "",
    "error_body": "",
    "call_id": "",
    "attempt": 1,
    "backoff_ms": 0.0,
    "ratelimit_limit": None,
    "ratelimit_remaining": None,
    "ratelimit_reset": None,
    "token_limit": None,
    "token_remaining": None,
    "token_reset": None,
    "retry_after_s": None,
    "deprecated": False,
    "deprecation_at": None,
    "sunset_at": None,
    "deprecation_link": "",
    "api_version": "",
    "first_byte_ms": None,
    "duration_ms": None,
    "streamed": False,
    "key_fingerprint": "",
    "version_header": "",
    "token_age_s": None,
    "batch_size": None,
    "flags": "",
}
_COLUMN_SET = frozenset(COLUMNS)
# Capped text columns, read in one call; a row whose lengths all fit passes in C.
_cap_values = itemgetter(*(name for name, _ in _CAPS))
_CAP_LIMITS = tuple(cap for _, cap in _CAPS)

# Response headers the writer parses; nothing else leaves the caller's thread.
_KEPT_HEADERS = frozenset(name.encode() for name in ("content-length", *parsing.PARSED_HEADERS))
_REDACTED_B = REDACTED.encode()


# --- the per-integration policy ------------------------------------------------------------


class Policy:
    """One integration's rules for its rows, shared by every source in this process.

    Refreshed in place by ``refresh_policies``: each refresh assigns new values (never
    mutates the old ones), because callers on other threads read them without a lock.
    """

    def __init__(
        self,
        slug: str = "",
        environment: str | None = None,
        base_url: str = "",
        *,
        named: bool = False,
    ) -> None:
        self.id: int | None = None
        self.slug = slug
        self.environment = environment
        self.base_url = base_url
        # Reached by slug (a client): re-created if the integration is deleted meanwhile.
        self.key: tuple[str, str | None, str] | None = (
            (slug, environment, base_url) if named else None
        )
        self.ident: int | tuple[str, str | None, str] | None = self.key
        #: Its integration was deleted: created again only when a call next names it.
        self.gone = False
        self.require_https = True
        self.templates: tuple[str, ...] = ()
        self.redact_names: tuple[str, ...] = ()
        self.redactor = _DEFAULT_REDACTOR
        #: The integration's provider preset (error shapes, diagnoses); None for none.
        self.preset: Preset | None = None
        #: Whether the caller keeps a scrubbed sample of small JSON 2xx bodies (``ok_body``)
        #: for the writer: only where the preset says the API answers errors with a 2xx.
        self.success_bodies = False
        self._secret_names: dict[bytes, bool] = {}
        self._template_cache: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<Policy {self.slug} · {self.environment} id={self.id}>"

    def apply(self, integration: Integration) -> None:
        """Take the integration's current settings."""
        self.slug = integration.slug
        self.environment = integration.environment
        self.require_https = integration.require_https
        self.preset = presets.ALL.get(integration.preset)
        self.success_bodies = self.preset is not None and self.preset.errors_on_success
        templates = tuple(integration.explicit_templates())
        if templates != self.templates:
            self.templates, self._template_cache = templates, {}
        names = tuple(integration.extra_redactions())
        if names != self.redact_names:
            self.redact_names, self.redactor = names, Redactor(names)
            self._secret_names = {}
            self._template_cache = {}  # templated paths are scrubbed with the redactor too
        self.id = integration.pk
        self.ident = integration.pk
        self.gone = False

    # -- the caller's side -----------------------------------------------------------------

    def is_secret_name(self, key: bytes) -> bool:
        """Whether a raw (still percent-encoded) query name holds a secret; cached per name."""
        verdicts = self._secret_names
        verdict = verdicts.get(key)
        if verdict is None:
            if len(verdicts) > 2048:
                verdicts = self._secret_names = {}
            verdict = self.redactor.is_secret_name(unquote_plus(key.decode("latin-1")))
            verdicts[key] = verdict
        return verdict

    def redact_query(self, query: str) -> str:
        """Secret-named query values → ``[redacted]``; value shapes are scrubbed later."""
        pairs = query.encode("latin-1", "replace").split(b"&")
        changed = False
        for i, pair in enumerate(pairs):
            key, eq, _ = pair.partition(b"=")
            if eq and self.is_secret_name(key):
                pairs[i] = key + b"=" + _REDACTED_B
                changed = True
        return b"&".join(pairs).decode("latin-1") if changed else query

    def kept_headers(self, headers: Iterable[tuple[bytes, bytes, bytes]]) -> list:
        """The allowlisted response headers from httpx's (raw name, lower name, value)
        triples; a Link only if it announces a deprecation."""
        kept = []
        for _, name, value in headers:
            if name in _KEPT_HEADERS:
                if name == b"link":
                    # Pagination links can carry cursors and signed tokens: not ours to keep.
                    lowered = value.lower()
                    if b"deprecation" not in lowered and b"sunset" not in lowered:
                        continue
                    text = self.redactor.text(value.decode("latin-1"))
                    value = text.encode("latin-1", "replace")
                kept.append((name, value))
        return kept

    def scrub_body(self, data: bytes, content_type: str | None) -> tuple[str, str]:
        """A failure's body as scrubbed text, and its media type without the charset (the
        scrubbed text is UTF-8 whatever the provider declared)."""
        scrubbed = self.redactor.body(data, content_type, cap=parsing.BODY_WINDOW)
        return scrubbed, (content_type or "").split(";", 1)[0].strip()

    # -- the writer's side -----------------------------------------------------------------

    def template(self, path: str) -> str:
        """The stored path: the endpoint template, with any credential-shaped segment the
        template kept scrubbed (cached per path)."""
        cached = self._template_cache.get(path)
        if cached is None:
            cache = self._template_cache
            if len(cache) > 4096:
                cache = self._template_cache = {}
            templated = parsing.template_path(path, self.templates)
            cached = cache[path] = _scrub_template(self.redactor, templated)
        return cached


@lru_cache(maxsize=4096)
def _scrub_template(redactor: Redactor, templated: str) -> str:
    # Many raw paths (one per id) share a template: scrub each template once per redactor.
    return redactor.url(templated)[: parsing.PATH_CAP] or "/"


_DEFAULT_REDACTOR = Redactor()
_DEFAULT_POLICY = Policy()

# Every policy this process made, for the refresh (clients hold theirs directly), and two
# indexes into them: by integration id (any source) and by (slug, environment) (clients).
_ALL: set[Policy] = set()
_BY_ID: dict[int, Policy] = {}
_BY_NAME: dict[tuple[str, str | None], Policy] = {}
_LOCK = threading.Lock()
_refreshed_at = time.monotonic()


def policy_for(
    integration: str | Integration, environment: str | None = None, base_url: str = ""
) -> Policy:
    """The policy of an integration named by slug (created on first use if unknown, as
    ``resolve_integration`` does) or given as an object. A database that is away only
    delays the lookup: the policy then has no id, and attempts carry its slug."""
    if isinstance(integration, Integration):
        return _adopt(integration)
    if not isinstance(integration, str) or not integration.strip():
        raise ValueError("integration must be a slug (str) or an Integration")
    if environment is not None and environment not in Environment.values:
        choices = ", ".join(Environment.values)
        raise ValueError(f"environment must be one of {choices}, not {environment!r}")
    name = (integration.strip(), environment)
    with _LOCK:
        found = _BY_NAME.get(name)
        if found is None:
            found = _BY_NAME[name] = Policy(*name, base_url, named=True)
            _ALL.add(found)
    if found.id is None:
        if _in_event_loop():
            # Issue 13: a client made inside a running event loop must not wait on the
            # database (a locked SQLite held the loop for seconds): load it on the side;
            # meanwhile attempts carry the slug and the writer resolves them.
            _resolve_in_background(found)
            return found
        try:
            _outside_event_loop(lambda: _resolve(found))
        except DatabaseError as exc:
            logger.warning("Upstream: integration %r not loaded yet (%s)", found.slug, exc)
    return found


_resolving: set[int] = set()


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _resolve_in_background(found: Policy) -> None:
    with _LOCK:
        if id(found) in _resolving:
            return
        _resolving.add(id(found))

    def run() -> None:
        from django.db import connection

        try:
            _resolve(found)
        except (DatabaseError, ValueError) as exc:
            logger.warning("Upstream: integration %r not loaded yet (%s)", found.slug, exc)
        finally:
            connection.close()
            with _LOCK:
                _resolving.discard(id(found))

    threading.Thread(target=run, name="upstream-integration-load", daemon=True).start()


def policy(integration_id: int) -> Policy:
    """The policy of the integration with this id, loaded on first use.

    If the database cannot say, the global defaults apply until the next refresh; so a
    source should ask while it can, as ``from_fields`` does on the caller's thread.
    """
    found = _BY_ID.get(integration_id)
    if found is not None:
        return found

    def load() -> Integration | None:
        return Integration.objects.filter(pk=integration_id).first()

    try:
        integration = _outside_event_loop(load)
    except DatabaseError as exc:
        logger.warning("Upstream: policy of integration %s not loaded (%s)", integration_id, exc)
        integration = None
    if integration is not None:
        return _adopt(integration)
    # Defaults, remembered so that every row does not ask again; the refresh retries (and
    # drops it if the integration is gone: the recorder counts such rows as lost).
    placeholder = Policy()
    placeholder.id = placeholder.ident = integration_id
    with _LOCK:
        _ALL.add(placeholder)
        return _BY_ID.setdefault(integration_id, placeholder)


def refresh_policies(max_age: float = REFRESH_S) -> None:
    """Reload every policy from the database if the last reload is older than ``max_age``
    seconds; the recorder's writer calls this on each wake. An integration deleted
    meanwhile is not created again here: only the next call of a client that names it by
    slug creates it again (as on first use)."""
    global _refreshed_at
    now = time.monotonic()
    if now - _refreshed_at < max_age:
        return
    _refreshed_at = now
    with _LOCK:
        policies = list(_ALL)
    by_id: dict[int, list[Policy]] = {}
    for found in policies:
        if found.id is not None:
            by_id.setdefault(found.id, []).append(found)
    try:
        for integration in Integration.objects.filter(pk__in=list(by_id)):
            for found in by_id.pop(integration.pk):
                found.apply(integration)
    except DatabaseError as exc:
        logger.warning("Upstream: integration policies not refreshed (%s)", exc)
        return
    with _LOCK:
        for gone_id, gone in by_id.items():
            _BY_ID.pop(gone_id, None)
            for found in gone:
                if found.key is None:
                    _ALL.discard(found)
                else:
                    found.id, found.ident, found.gone = None, found.key, True
    for found in policies:
        if found.id is None and found.key is not None:
            try:
                if found.gone:
                    _readopt(found)
                else:
                    _resolve(found)
            except (DatabaseError, ValueError) as exc:
                logger.warning("Upstream: integration %r not resolved (%s)", found.slug, exc)


def clear_policies() -> None:
    """Forget every policy (tests empty the database, and ids are then reused)."""
    with _LOCK:
        _ALL.clear()
        _BY_ID.clear()
        _BY_NAME.clear()


def _adopt(integration: Integration) -> Policy:
    with _LOCK:
        found = _BY_ID.get(integration.pk)
        if found is None:
            found = _BY_ID[integration.pk] = Policy(integration.slug, integration.environment)
            _ALL.add(found)
    found.apply(integration)
    return found


def _readopt(named: Policy) -> None:
    """Take back the integration of a policy whose integration was deleted, if one of that
    slug exists again. It is not created here: somebody deleted it on purpose, so only the
    next call that names it creates it again (the writer resolves such rows by key)."""
    matches = _named_integrations(*named.key[:2])
    if len(matches) == 1:
        named.apply(matches[0])
        with _LOCK:
            _BY_ID.setdefault(matches[0].pk, named)


def _resolve(named: Policy) -> None:
    """Give a policy known by slug its integration (creating it if need be)."""
    integration = resolve_integration(*named.key)
    named.apply(integration)
    with _LOCK:
        _BY_ID.setdefault(integration.pk, named)


def _outside_event_loop(fn: Callable[[], Any]) -> Any:
    # Django refuses ORM calls on a thread running an event loop; this runs about once per
    # integration per process, so a short-lived helper thread is fine.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    results: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(fn())
        except BaseException as exc:
            errors.append(exc)
        finally:
            from django.db import connection

            connection.close()

    thread = threading.Thread(target=run, name="upstream-integration-load")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


_loopback_cache: dict[str, bool] = {}


def is_loopback(host: str) -> bool:
    """Whether a host is this machine (``localhost``, 127/8, ::1): plain http is fine there."""
    verdict = _loopback_cache.get(host)
    if verdict is None:
        name = host.strip("[]").lower()
        if name == "localhost" or name.endswith(".localhost"):
            verdict = True
        else:
            try:
                verdict = ipaddress.ip_address(name).is_loopback
            except ValueError:
                verdict = False
        if len(_loopback_cache) < 1024:
            _loopback_cache[host] = verdict
    return verdict


def _named_integrations(slug: str, environment: str | None) -> list[Integration]:
    """At most two integrations of this slug (and environment, when given): one is a match,
    two say the slug is ambiguous."""
    found = Integration.objects.filter(slug=slug)
    if environment:
        found = found.filter(environment=environment)
    return list(found[:2])


def resolve_integration(
    slug: str, environment: str | None = None, base_url: str = ""
) -> Integration:
    """The integration with this slug (and environment); created, and audited, if unknown.

    Without an environment, the slug must name exactly one integration, or none: then a
    sandbox one is created. Raises ValueError when the slug is ambiguous.
    """
    from monitoring import audit

    slug = slug.strip()
    if not slug:
        raise ValueError("integration slug is empty")
    matches = _named_integrations(slug, environment)
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        envs = ", ".join(
            sorted(Integration.objects.filter(slug=slug).values_list("environment", flat=True))
        )
        raise ValueError(
            f"integration {slug!r} exists in several environments ({envs}); pass environment="
        )
    safe_base = _DEFAULT_REDACTOR.url(base_url).split("?")[0] if base_url else ""
    with transaction.atomic():
        integration, created = Integration.objects.get_or_create(
            slug=slug,
            environment=environment or "sandbox",
            defaults={
                "name": slug.replace("-", " ").replace("_", " ").title(),
                "base_url": safe_base[:500],
            },
        )
        if created:
            audit.record(
                "integration.auto_created",
                actor="monitoring.client",
                target=integration,
                after={"slug": slug, "environment": integration.environment, "base_url": safe_base},
            )
    return integration


# --- keyword fields → an Attempt (probes, and the ingest API after them) ---------------------

_SLOT_FIELDS = frozenset(
    {
        "source",
        "created",
        "latency_ms",
        "method",
        "scheme",
        "host",
        "path",
        "query",
        "status",
        "outcome",
        "request_bytes",
        "response_bytes",
        "call_id",
        "attempt",
        "backoff_ms",
        "error_message",
        "error_body",
    }
)
_TEXT_FIELDS = ("error_code", "deprecation_link")
# ``ok_body``: a 2xx body's scrubbed sample; the writer reads it, no column keeps it.
_FIELD_NAMES = _COLUMN_SET | {"integration", "url", "response_headers", "content_type", "ok_body"}


# A URL urlsplit would split exactly so: lower-case http(s), a host of plain characters and
# an optional port (no userinfo, no brackets), printable ASCII after it. Anything else (tabs,
# control characters, "@", non-ASCII …) goes through urlsplit itself.
_PLAIN_URL = re.compile(
    r"(https?)://([A-Za-z0-9.:-]+)"  # scheme, host[:port]
    r"(/[!-\"$->@-~]*)?"  # path: printable, no "#" or "?"
    r"(?:\?([!-\"$-~]*))?"  # query: printable, no "#"
    r"(?:#[!-~]*)?"  # fragment, dropped
)


@lru_cache(maxsize=1024)
def _host_port(scheme: str, netloc: str) -> tuple[str, int | None]:
    """The host (userinfo dropped, lower case) and port of a URL's netloc; cached because a
    batch names few hosts and SplitResult parses the netloc again for each property."""
    parts = SplitResult(scheme, netloc, "", "", "")
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.hostname or "", port


def from_fields(**fields: Any) -> Attempt:
    """An ``Attempt`` from keyword fields, scrubbed with the integration's policy.

    Keyword fields are RequestLog's (``integration_id``, ``method``, ``status``, ``outcome``,
    ``latency_ms``, ``created``, ``request_bytes``, ``response_bytes``, ``error_code``,
    ``error_message``, ``attempt``, ``call_id`` …) plus:

    * ``integration`` — an Integration or its id, instead of ``integration_id``;
    * ``url`` — the full URL: scheme, host, port, path and query come from it (userinfo
      dropped); without it give ``host`` and ``path``;
    * ``response_headers`` — a mapping; rate-limit, Retry-After, Deprecation/Sunset/Link and
      API version are parsed from it, nothing else is kept;
    * ``error_body`` (bytes or str) with ``content_type`` — scrubbed; an error code and
      message are parsed from it unless given.

    ``outcome`` defaults to the status class (``other_error`` without a status), ``created``
    to now. The path is templated and the query scrubbed with the integration's explicit
    templates and redaction names, as for the client's own calls.
    """
    unknown = fields.keys() - _FIELD_NAMES
    if unknown:
        raise TypeError(f"from_fields() got unknown fields: {', '.join(sorted(unknown))}")
    integration = fields.pop("integration", None)
    if integration is not None:
        fields["integration_id"] = integration if isinstance(integration, int) else integration.pk
    integration_id = fields.pop("integration_id", None)
    if integration_id is None:
        raise TypeError("from_fields() needs integration= or integration_id=")
    url = fields.pop("url", None)
    port = None
    if url:
        url = str(url)[: parsing.BODY_WINDOW]
        plain = _PLAIN_URL.fullmatch(url)
        if plain:  # what urlsplit gives for it, at a fraction of the cost (ingest's hot path)
            scheme, netloc, path, query = plain.groups(default="")
        else:
            scheme, netloc, path, query, _ = urlsplit(url)
        hostname, port = _host_port(scheme, netloc)
        fields.setdefault("scheme", scheme or "https")
        fields.setdefault("host", hostname)
        fields.setdefault("path", path or "/")
        fields.setdefault("query", query)
    for name in ("method", "host", "path", "latency_ms"):
        if fields.get(name) is None:
            raise TypeError(f"from_fields() needs {name}= (or url=)")
    rules = policy(integration_id)
    redactor = rules.redactor
    query = fields.pop("query", None)
    headers = fields.pop("response_headers", None)
    content_type = fields.pop("content_type", None)
    body = fields.pop("error_body", None)
    message = fields.pop("error_message", None)
    created = fields.pop("created", None) or timezone.now()
    scrubbed_body = None
    if body:
        raw = body.encode() if isinstance(body, str) else bytes(body)
        scrubbed_body, content_type = rules.scrub_body(raw, content_type)
    given = {name: fields[name] for name in fields.keys() - _SLOT_FIELDS}
    for name in _TEXT_FIELDS:
        if given.get(name):
            given[name] = redactor.text(str(given[name]))
    return Attempt(
        integration_id,
        fields.get("source") or _DEFAULTS["source"],
        created,
        fields["latency_ms"],
        str(fields["method"]).upper(),
        fields.get("scheme") or "https",
        str(fields["host"]),
        port,
        str(fields["path"]),
        rules.redact_query(str(query)) if query else None,
        fields.get("status"),
        fields.get("outcome") or None,
        fields.get("request_bytes"),
        fields.get("response_bytes"),
        rules.kept_headers(_header_triples(headers)) if headers else None,
        fields.get("call_id") or "",
        fields.get("attempt") or 1,
        fields.get("backoff_ms") or 0.0,
        redactor.text(str(message)) if message else None,
        scrubbed_body,
        content_type,
        given,
    )


def _header_triples(headers: Any) -> list:
    """httpx's (raw name, lower name, value) triples of the headers the writer may read.

    A dict of str (the ingest API's, per event) is read directly, the rest dropped at
    once: building ``httpx.Headers`` cost more than the rest of ``from_fields``, and it
    raises on a non-ASCII value, which here is kept as latin-1 ("?" where it has none).
    """
    if headers.__class__ is dict:
        try:
            return [
                (name, lower, value.encode("latin-1", "replace"))
                for name, value in headers.items()
                if (lower := name.lower().encode("latin-1", "replace")) in _KEPT_HEADERS
            ]
        except AttributeError:  # not str names and values: httpx says what is wrong
            pass
    return httpx.Headers(headers)._list


# --- an Attempt (or a finished row) → a RequestLog row (the writer thread) ------------------


def to_row(item: Attempt | dict) -> dict:
    """The capped RequestLog row dict of an ``Attempt``, with its integration's policy.

    A dict is taken as a row already built (a bulk loader's, a spooled one): missing
    optional columns get their defaults and text is capped; ValueError if it lacks a
    required column.
    """
    if item.__class__ is not Attempt:
        return _complete(item)
    (
        ident,
        source,
        created,
        latency_ms,
        method,
        scheme,
        host,
        port,
        path,
        query,
        status,
        outcome,
        request_bytes,
        response_bytes,
        headers,
        call_id,
        attempt,
        backoff_ms,
        error_message,
        error_body,
        content_type,
        given,
    ) = item
    if ident.__class__ is int:
        rules = _BY_ID.get(ident) or policy(ident)
        integration_id = ident
    else:
        rules = _BY_NAME.get(ident[:2], _DEFAULT_POLICY)
        integration_id = rules.id
    if isinstance(created, datetime):
        wall = created.timestamp()
    else:
        wall, created = created, datetime.fromtimestamp(created, UTC)
    if port is not None and port != (443 if scheme == "https" else 80):
        host = f"{host}:{port}"
    redactor = rules.redactor
    row = {
        "created": created,
        "integration_id": integration_id,
        "source": source,
        "method": method[:10],
        "scheme": scheme[:5],
        "host": host[:255],
        "path": rules.template(path or "/"),
        "query": redactor.url("/?" + query).partition("?")[2][:500] if query else "",
        "status": status,
        "outcome": outcome or (parsing.classify_status(status) if status else Outcome.OTHER_ERROR),
        "latency_ms": latency_ms,
        "request_bytes": request_bytes,
        "response_bytes": response_bytes,
        "error_code": "",
        "error_message": "",
        "error_body": "",
        "call_id": call_id,
        "attempt": attempt,
        "backoff_ms": backoff_ms,
        "ratelimit_limit": None,
        "ratelimit_remaining": None,
        "ratelimit_reset": None,
        "token_limit": None,
        "token_remaining": None,
        "token_reset": None,
        "retry_after_s": None,
        "deprecated": False,
        "deprecation_at": None,
        "sunset_at": None,
        "deprecation_link": "",
        "api_version": "",
        "first_byte_ms": None,
        "duration_ms": None,
        "streamed": False,
        "key_fingerprint": "",
        "version_header": "",
        "token_age_s": None,
        "batch_size": None,
        "flags": "",
    }
    if integration_id is None:
        row[INTEGRATION_KEY] = ident
    if headers:
        if headers.__class__ is dict:
            # The SDK's kept headers (str; monitoring.client): filtered here, on the writer.
            decoded = {k: v for k, v in headers.items() if k in _PARSED_NAMES}
        else:
            decoded = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
        length = decoded.pop("content-length", None)
        if response_bytes is None and length and length.isdigit():
            row["response_bytes"] = int(length)
        if decoded:
            _apply_headers(row, decoded, wall, redactor)
    if error_message:
        row["error_message"] = error_message[:500]
    if error_body is not None:
        if not error_message and not (given and given.get("error_code")):
            parsed = parsing.parse_error(
                error_body.encode(),
                content_type,
                scrub=redactor.text,
                preset=rules.preset,
                status=status,
                # The caller's JWT age (upstream_client.facts) tells expired from rejected.
                token_age_s=given.get("token_age_s") if given else None,
            )
            row["error_code"], row["error_message"] = parsed.code, parsed.message
        row["error_body"] = error_body[:ERROR_BODY_CAP]
    if given is not None:
        ok_body = given.get("ok_body")
        if ok_body is not None:
            given = {k: v for k, v in given.items() if k != "ok_body"}
        row.update(given)
        if row["batch_size"] is not None:
            _flag_batch(row, rules, path)
        if ok_body.__class__ is str and row["outcome"] == Outcome.OK and rules.preset is not None:
            _success_error(row, ok_body, rules)
        _cap(row)
    return row


_BATCH_MAX = 32767  # the column is a small integer


def _flag_batch(row: dict, rules: Policy, path: str) -> None:
    """Mark a bulk request over the preset's advised batch size (it stays a success)."""
    size = row["batch_size"]
    if size.__class__ is not int or size < 0:
        row["batch_size"] = None
        return
    if size > _BATCH_MAX:
        row["batch_size"] = size = _BATCH_MAX
    if rules.preset is not None:
        flags = rules.preset.request_flags(row["method"], path, size)
        if flags:
            known = [f for f in row["flags"].split(",") if f]
            row["flags"] = ",".join(dict.fromkeys([*known, *flags]))


def _success_error(row: dict, ok_body: str, rules: Policy) -> None:
    """A 2xx whose body is one of the provider's errors (OpenPanel's 200 ``{"error": …}``)
    is a failure: a client error with the parsed code and message, and its body kept like
    any failure's (scrubbed again with the integration's names, capped). Any other 2xx
    body is dropped here: it is never stored."""
    redactor = rules.redactor
    parsed = parsing.parse_success_error(
        ok_body,
        rules.preset,
        scrub=redactor.text,
        status=row["status"],
        token_age_s=row["token_age_s"],
    )
    if parsed is None:
        return
    row["outcome"] = Outcome.CLIENT_ERROR.value
    if not row["error_code"]:
        row["error_code"] = parsed.code
    if not row["error_message"]:
        row["error_message"] = parsed.message
    if not row["error_body"]:
        row["error_body"] = redactor.body(ok_body.encode(), "application/json", cap=ERROR_BODY_CAP)


def _complete(row: dict) -> dict:
    if not row.keys() >= _COLUMN_SET:
        row = {**_DEFAULTS, **row}
        missing = _COLUMN_SET - row.keys()
        if missing:
            raise ValueError(f"row lacks {', '.join(sorted(missing))}")
    _cap(row)
    return row


def _cap(row: dict) -> None:
    try:
        fits = not any(map(gt, map(len, _cap_values(row)), _CAP_LIMITS))
    except TypeError:  # a None (or other unsized) value: check field by field
        fits = False
    if not fits:
        for name, cap in _CAPS:
            value = row[name]
            if value and len(value) > cap:
                row[name] = value[:cap]


_RATE_HEADERS = parsing.RATE_LIMIT_HEADERS
_PARSED_NAMES = frozenset(("content-length", *parsing.PARSED_HEADERS))
# Deprecation and version headers are the same on every call to an endpoint, and their
# parsers are pure: remember the last few answers (rate limits change every call).
_pure_cache: dict[tuple, tuple] = {}


def _apply_headers(row: dict, headers: Mapping[str, str], now: float, redactor: Redactor) -> None:
    """Fill rate-limit, Retry-After, deprecation and API-version columns from (kept,
    lower-cased) response headers. Parsers with nothing to read are skipped."""
    names = headers.keys()
    if not names.isdisjoint(_RATE_HEADERS):
        limits = parsing.parse_rate_limit(headers, now)
        row["ratelimit_limit"] = limits.limit
        row["ratelimit_remaining"] = limits.remaining
        if limits.reset_at is not None:
            row["ratelimit_reset"] = _from_epoch(limits.reset_at)
        row["retry_after_s"] = limits.retry_after_s
        if limits.token_remaining is not None:
            row["token_limit"] = limits.token_limit
            row["token_remaining"] = limits.token_remaining
            if limits.token_reset_at is not None:
                row["token_reset"] = _from_epoch(limits.token_reset_at)
    rest = tuple(item for item in headers.items() if item[0] not in _RATE_HEADERS)
    if not rest:
        return
    key = (rest, redactor)
    parsed = _pure_cache.get(key)
    if parsed is None:
        deprecation = parsing.parse_deprecation(headers)
        link = redactor.url(deprecation.link)[: parsing.LINK_CAP] if deprecation.link else ""
        parsed = (
            deprecation.deprecated,
            deprecation.deprecated_at,
            deprecation.sunset_at,
            link,
            parsing.parse_api_version(headers),
        )
        if len(_pure_cache) > 1024:
            _pure_cache.clear()
        _pure_cache[key] = parsed
    (
        row["deprecated"],
        row["deprecation_at"],
        row["sunset_at"],
        row["deprecation_link"],
        row["api_version"],
    ) = parsed


def _from_epoch(seconds: float) -> datetime | None:
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None
