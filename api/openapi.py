"""The OpenAPI 3.1 description of the machine-facing API and the events JSON Schema."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from api.problems import endpoint, json_response
from monitoring.models import AlertState, Environment, Outcome

_PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _problem(description: str) -> dict:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": _PROBLEM}},
    }


_ERRORS = {
    "401": _problem("Missing, unknown, revoked or expired API key"),
    "403": _problem("The key lacks the scope"),
    "429": _problem("Rate limit exceeded, or too many failed keys (see Retry-After)"),
}
_NULLABLE_NUMBER = {"type": ["number", "null"]}

EVENT_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "/api/v1/schema/events.json",
    "title": "Upstream events batch",
    "type": "object",
    "required": ["events"],
    "properties": {
        "batch_id": {
            "type": "string",
            "maxLength": 100,
            "description": "Resending a batch with the same id (per key) stores it once.",
        },
        "events": {"type": "array", "maxItems": 1000, "items": {"$ref": "#/$defs/event"}},
        "dropped": {
            "type": "integer",
            "minimum": 0,
            "description": "Events the sender dropped since its last batch (its spool was "
            "full); Upstream records the loss, counted once per batch_id.",
        },
    },
    "$defs": {
        "event": {
            "type": "object",
            "required": ["integration", "method", "latency_ms"],
            "description": "One HTTP attempt. Give url, or host and path. status null (a "
            "transport error) requires outcome.",
            "properties": {
                "integration": {"type": "string", "minLength": 1, "maxLength": 100},
                "environment": {"enum": list(Environment.values)},
                "time": {"type": "string", "format": "date-time"},
                "method": {"type": "string", "minLength": 1, "maxLength": 10},
                "url": {"type": "string", "format": "uri", "maxLength": 4096},
                "host": {"type": "string", "maxLength": 255},
                "path": {"type": "string", "maxLength": 4096, "pattern": "^/"},
                "scheme": {"enum": ["http", "https"]},
                "status": {"type": ["integer", "null"], "minimum": 100, "maximum": 599},
                "outcome": {"enum": list(Outcome.values)},
                "latency_ms": {"type": "number", "minimum": 0, "maximum": 86400000},
                "request_bytes": {"type": ["integer", "null"], "minimum": 0},
                "response_bytes": {"type": ["integer", "null"], "minimum": 0},
                "response_headers": {
                    "type": "object",
                    "maxProperties": 200,
                    "additionalProperties": {"type": "string"},
                    "description": "Only the headers the server parses are kept.",
                },
                "error_body": {"type": "string"},
                "call_id": {"type": "string", "maxLength": 32},
                "attempt": {"type": "integer", "minimum": 1, "maximum": 1000},
                "backoff_ms": {"type": "number", "minimum": 0},
                "first_byte_ms": {"type": ["number", "null"], "minimum": 0},
                "duration_ms": {
                    "type": ["number", "null"],
                    "minimum": 0,
                    "description": "To the end of the body (a stream's whole length).",
                },
                "streamed": {"type": "boolean"},
                "stream_error": {
                    "type": "string",
                    "maxLength": 100,
                    "description": "Why a stream the provider broke failed (the error code).",
                },
                "batch_size": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": 2**31 - 1,
                    "description": "How many items a bulk or batch request carried (counted "
                    "by the caller); one over the provider's advised size is flagged.",
                },
                "ok_body": {
                    "type": "string",
                    "maxLength": 16384,
                    "description": "A small JSON 2xx body, scrubbed, for an API that answers "
                    "errors with 200: such an error is stored as a failure; any other is "
                    "dropped.",
                },
            },
        }
    },
}

_EVENTS_ANSWER = {
    "type": "object",
    "required": ["accepted", "rejected", "duplicate", "errors"],
    "properties": {
        "accepted": {"type": "integer"},
        "rejected": {"type": "integer"},
        "duplicate": {"type": "boolean"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "index": {"type": "integer"},
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
        },
    },
}
_INTEGRATION = {
    "type": "object",
    "properties": {
        "slug": {"type": "string"},
        "name": {"type": "string"},
        "environment": {"type": "string"},
        "base_url": {"type": "string"},
        "active": {"type": "boolean"},
    },
}

DOCUMENT: dict = {
    "openapi": "3.1.0",
    "info": {
        "title": "Upstream API",
        "version": "1",
        "description": "Report HTTP calls to Upstream and read its metrics. Authenticate with "
        "`Authorization: Bearer <key>` (create keys with `manage.py create_api_key`). Every error "
        "is application/problem+json (RFC 9457).",
    },
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}],
    "paths": {
        "/api/v1/events": {
            "post": {
                "operationId": "postEvents",
                "summary": "Report a batch of HTTP attempts (scope ingest)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Events"}}
                    },
                },
                "responses": {
                    "202": {
                        "description": "Stored durably (database or spool); bad events listed",
                        "content": {"application/json": {"schema": _EVENTS_ANSWER}},
                    },
                    "400": _problem("Malformed JSON (with line and column) or a bad batch"),
                    **_ERRORS,
                    "413": _problem("Over the event or size limit (after decompression)"),
                    "415": _problem("Not application/json, or an unsupported Content-Encoding"),
                    "503": _problem("Neither the database nor the spool could store the batch"),
                },
            }
        },
        "/api/v1/integrations": {
            "get": {
                "operationId": "listIntegrations",
                "summary": "Every integration (scope read)",
                "responses": {
                    "200": {
                        "description": "The integrations",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "integrations": {"type": "array", "items": _INTEGRATION}
                                    },
                                }
                            }
                        },
                    },
                    "400": _problem("Unknown query parameter"),
                    **_ERRORS,
                },
            }
        },
        "/api/v1/integrations/{slug}/summary": {
            "get": {
                "operationId": "integrationSummary",
                "summary": "Requests, error rate, latency percentiles, 401/403, quota, verdict",
                "parameters": [
                    {"name": "slug", "in": "path", "required": True, "schema": {"type": "string"}},
                    {
                        "name": "environment",
                        "in": "query",
                        "schema": {"enum": list(Environment.values)},
                    },
                    {
                        "name": "range",
                        "in": "query",
                        "schema": {"enum": ["1h", "24h", "7d", "30d"], "default": "24h"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The figures for the window",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "integration": _INTEGRATION,
                                        "requests": {"type": "integer"},
                                        "error_rate": _NULLABLE_NUMBER,
                                        "latency_ms": {
                                            "type": "object",
                                            "properties": {
                                                "p50": _NULLABLE_NUMBER,
                                                "p95": _NULLABLE_NUMBER,
                                                "p99": _NULLABLE_NUMBER,
                                            },
                                        },
                                        "status_401": {"type": "integer"},
                                        "status_403": {"type": "integer"},
                                        "min_quota_remaining": {"type": ["integer", "null"]},
                                        "verdict": {"enum": ["ok", "degraded", "down", "no_data"]},
                                    },
                                }
                            }
                        },
                    },
                    "400": _problem("Unknown environment or range, or an ambiguous slug"),
                    "404": _problem("No such integration"),
                    **_ERRORS,
                },
            }
        },
        "/api/v1/integrations/{slug}/scorecard": {
            "get": {
                "operationId": "integrationScorecard",
                "summary": "The best-practice scorecard: a grade and each check's evidence",
                "parameters": [
                    {"name": "slug", "in": "path", "required": True, "schema": {"type": "string"}},
                    {
                        "name": "environment",
                        "in": "query",
                        "schema": {"enum": list(Environment.values)},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The newest scorecard (refreshed hourly)",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "integration": _INTEGRATION,
                                        "computed_at": {"type": "string", "format": "date-time"},
                                        "score": {"type": ["integer", "null"]},
                                        "grade": {"type": "string"},
                                        "checks": {
                                            "type": "array",
                                            "items": {
                                                "type": "object",
                                                "properties": {
                                                    "key": {"type": "string"},
                                                    "title": {"type": "string"},
                                                    "grade": {
                                                        "enum": ["pass", "warn", "fail", "unknown"]
                                                    },
                                                    "evidence": {"type": "string"},
                                                    "guide": {"type": "string"},
                                                    "link": {"type": "string"},
                                                },
                                            },
                                        },
                                        "changed_since_last_week": {"type": "array"},
                                    },
                                }
                            }
                        },
                    },
                    "400": _problem("Unknown environment, or an ambiguous slug"),
                    "404": _problem("No such integration"),
                    **_ERRORS,
                },
            }
        },
        "/api/v1/config": {
            "get": {
                "operationId": "exportConfig",
                "summary": "The configuration as YAML (or JSON with Accept: application/json)",
                "responses": {
                    "200": {
                        "description": "Integrations, probes, webhooks, channels, routes, "
                        "rules, maintenance windows; secrets only as ${ENV} references",
                        "content": {
                            "application/yaml": {"schema": {"type": "string"}},
                            "application/json": {"schema": {"type": "object"}},
                        },
                    },
                    **_ERRORS,
                },
            },
            "put": {
                "operationId": "importConfig",
                "summary": "Apply a configuration idempotently (scope admin); the diff back",
                "parameters": [
                    {"name": "dry_run", "in": "query", "schema": {"type": "boolean"}},
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/yaml": {"schema": {"type": "string"}},
                        "application/json": {"schema": {"type": "object"}},
                    },
                },
                "responses": {
                    "200": {
                        "description": "What changed (or would, with dry_run)",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "dry_run": {"type": "boolean"},
                                        "changes": {"type": "array"},
                                        "unchanged": {"type": "integer"},
                                        "diff": {"type": "string"},
                                    },
                                }
                            }
                        },
                    },
                    "400": _problem("Not valid: every problem listed; nothing was changed"),
                    "413": _problem("Body too large"),
                    "415": _problem("Unsupported Content-Encoding"),
                    **_ERRORS,
                },
            },
        },
        "/api/v1/alerts": {
            "get": {
                "operationId": "listAlerts",
                "summary": "Alerts, newest first (scope read)",
                "parameters": [
                    {"name": "state", "in": "query", "schema": {"enum": list(AlertState.values)}}
                ],
                "responses": {
                    "200": {
                        "description": "The alerts",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "alerts": {"type": "array", "items": {"type": "object"}}
                                    },
                                }
                            }
                        },
                    },
                    "400": _problem("Unknown state or query parameter"),
                    **_ERRORS,
                },
            }
        },
        "/otlp/v1/traces": {
            "post": {
                "operationId": "otlpTraces",
                "summary": "OTLP/HTTP trace export (scope ingest)",
                "description": "Point any OpenTelemetry SDK here with OTEL_EXPORTER_OTLP_ENDPOINT="
                "<upstream>/otlp and OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer <key>. CLIENT "
                "spans with HTTP semantic conventions become attempts; application/x-protobuf or "
                "application/json, gzip or not. Answers OTLP partial success.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-protobuf": {
                            "schema": {"type": "string", "format": "binary"}
                        },
                        "application/json": {"schema": {"type": "object"}},
                    },
                },
                "responses": {
                    "200": {"description": "ExportTraceServiceResponse (partial success)"},
                    "400": _problem("Undecodable body"),
                    **_ERRORS,
                    "413": _problem("Body too large"),
                    "415": _problem("Unsupported content type"),
                },
            }
        },
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Events": {
                **{k: v for k, v in EVENT_SCHEMA.items() if k not in ("$schema", "$id", "$defs")},
                "properties": {
                    "batch_id": EVENT_SCHEMA["properties"]["batch_id"],
                    "dropped": EVENT_SCHEMA["properties"]["dropped"],
                    "events": {
                        "type": "array",
                        "description": "Up to 1,000 events (configurable); more is 413.",
                        # Any item: each is checked against Event on its own, and a bad
                        # one is listed in the answer's errors while the rest are stored.
                        "items": {"description": "An Event; a bad one is rejected alone"},
                    },
                },
            },
            "Event": EVENT_SCHEMA["$defs"]["event"],
            "Problem": {
                "type": "object",
                "required": ["type", "title", "status"],
                "properties": {
                    "type": {"type": "string"},
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "detail": {"type": "string"},
                    "errors": {"type": "array", "items": {"type": "object"}},
                },
            },
        },
    },
}


@endpoint("GET")
def document(request: HttpRequest) -> HttpResponse:
    return json_response(DOCUMENT)


@endpoint("GET")
def events_schema(request: HttpRequest) -> HttpResponse:
    return json_response(EVENT_SCHEMA)
