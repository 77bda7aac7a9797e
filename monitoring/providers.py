"""Provider presets: what Upstream knows about each third-party API, as plain data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    """One provider's knowledge; probes are plain dicts so the probe runner owns their meaning."""

    name: str
    title: str
    base_url: str  # pattern; ``<host>`` / ``<username>`` mark the parts a user fills in
    auth_header: str = "Authorization"
    auth_schemes: tuple[str, ...] = ("Bearer",)  # token formats sent in auth_header
    redact_names: tuple[str, ...] = ()  # extra header/query/body names to redact
    error_shapes: tuple[str, ...] = ()  # dotted paths to code/message, e.g. "error.message"
    rate_limit_headers: tuple[str, ...] = ()  # empty = none published (no headroom rule)
    version_header: str = ""
    templates: tuple[str, ...] = ()  # documented endpoints as path templates
    pagination: str = ""
    # Each probe: {"name", "method", "path", "expect_status"} or {"name", "steps": [step, ...]}
    # where a step is {"name", "method", "path", "json"?, "headers"?, "extract"?: {var: "$.x"},
    # "expect_status"}; ``${ENV}`` names secrets, ``{{var}}`` uses an extracted value.
    probes: tuple[dict[str, Any], ...] = ()
    status_page: str = ""
    webhook_scheme: str = ""
    token_lifetime_s: int | None = None  # past this age a 401 means "token expired"
    limits: dict[str, Any] = field(default_factory=dict)
    rules: tuple[str, ...] = ()  # rule kinds that make sense for this provider


GENERIC = Preset(
    name="generic",
    title="Generic platform guide",
    base_url="https://<host>/",
    error_shapes=("error.code", "error.message", "error.details"),
    rate_limit_headers=("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"),
    webhook_scheme="hmac-sha256",
    rules=("error_rate", "latency", "rate_limit_headroom"),
)

OPENPANEL = Preset(
    name="openpanel",
    title="OpenPanel OpenAdmin API",
    base_url="https://<host>:2087/api/",
    error_shapes=("error",),
    templates=(
        "/api/users/{username}",
        "/api/plans/{plan_id}",
        "/api/notifications/{line_number}",
        "/api/domains/{domain}",
    ),
    probes=(
        {"name": "api up", "method": "GET", "path": "/api/", "expect_status": 200},
        {
            "name": "sign in and whoami",
            "steps": [
                {
                    "name": "sign in",
                    "method": "POST",
                    "path": "/api/",
                    "json": {"username": "${OPENPANEL_USER}", "password": "${OPENPANEL_PASSWORD}"},
                    "extract": {"access_token": "$.access_token"},
                    "expect_status": 200,
                },
                {
                    "name": "whoami",
                    "method": "GET",
                    "path": "/api/whoami",
                    "headers": {"Authorization": "Bearer {{access_token}}"},
                    "expect_status": 200,
                },
            ],
        },
    ),
    token_lifetime_s=15 * 60,
    limits={"sign_ins_per_minute": 5},
    rules=("error_rate", "latency"),
)

PAUBOX = Preset(
    name="paubox",
    title="Paubox Email API",
    base_url="https://api.paubox.net/v1/<username>",
    auth_schemes=("Token token=", "Bearer"),
    error_shapes=("errors.0.code", "errors.0.title", "errors.0.details", "message", "error"),
    templates=(
        "/v1/{username}/messages",
        "/v1/{username}/bulk_messages",
        "/v1/{username}/message_receipt",
        "/v1/{username}/dynamic_templates",
        "/v1/{username}/dynamic_templates/{id}",
        "/v1/{username}/templated_messages",
    ),
    probes=(
        {"name": "templates", "method": "GET", "path": "dynamic_templates", "expect_status": 200},
    ),
    status_page="https://status.paubox.com",
    limits={"bulk_batch_max": 50},
    rules=("error_rate", "latency"),
)

ALL: dict[str, Preset] = {p.name: p for p in (GENERIC, OPENPANEL, PAUBOX)}
DEFAULT = GENERIC.name


def get(name: str) -> Preset:
    """The preset called ``name``; KeyError names the known ones."""
    try:
        return ALL[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(sorted(ALL))}") from None
