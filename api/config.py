"""GET / PUT /api/v1/config (scope ``admin``): configuration as code over HTTP."""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse

from api.auth import require_key
from api.body import read_body
from api.problems import Problem, endpoint, json_response
from monitoring import config
from monitoring.models import ActorType

MAX_BYTES = 2 * 1024 * 1024


def _wants_json(request: HttpRequest) -> bool:
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "yaml" not in accept


@endpoint("GET", "PUT")
@require_key("admin")
def document(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        doc = config.export()
        if _wants_json(request):
            return json_response(doc)
        return HttpResponse(config.dump_yaml(doc), content_type="application/yaml; charset=utf-8")
    unknown = sorted(set(request.GET) - {"dry_run"})
    if unknown:
        raise Problem(400, f"Unknown query parameter {unknown[0]!r}; this endpoint takes dry_run.")
    dry_run = request.GET.get("dry_run", "").lower() in ("1", "true", "yes")
    body = read_body(request, MAX_BYTES)
    try:
        doc = config.load(body)
        result = (
            config.plan(doc)
            if dry_run
            else config.apply(doc, actor=request.api_key.name, actor_type=ActorType.API_KEY)
        )
    except config.ConfigError as exc:
        raise Problem(
            400,
            "The configuration is not valid; nothing was changed.",
            errors=[{"message": e} for e in exc.errors],
        ) from None
    return json_response(
        {
            "dry_run": dry_run,
            "changes": [
                {
                    "kind": c.kind,
                    "key": c.key,
                    "action": c.action,
                    "fields": {
                        k: [json.loads(json.dumps(v, default=str)) for v in pair]
                        for k, pair in c.fields.items()
                    },
                }
                for c in result.changes
            ],
            "unchanged": result.unchanged,
            "diff": result.diff(),
        }
    )
