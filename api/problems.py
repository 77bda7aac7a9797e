"""problem+json (RFC 9457) answers for every error under /api/ and /otlp/, never a page."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

logger = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"
PREFIXES = ("/api/", "/otlp/", "/hooks/")
TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    413: "Content too large",
    415: "Unsupported media type",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


class Problem(Exception):
    """Raise anywhere inside an API view: the view answers it as problem+json."""

    def __init__(
        self,
        status: int,
        detail: str = "",
        *,
        title: str | None = None,
        errors: list[dict] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title or TITLES.get(status, ""))
        self.status = status
        self.detail = detail
        self.title = title
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra

    def response(self) -> HttpResponse:
        return problem(
            self.status,
            self.detail,
            title=self.title,
            errors=self.errors,
            headers=self.headers,
            **self.extra,
        )


def problem(
    status: int,
    detail: str = "",
    *,
    title: str | None = None,
    errors: list[dict] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> HttpResponse:
    """An ``application/problem+json`` response; ``errors`` lists field problems."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or TITLES.get(status, "Error"),
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if errors is not None:
        body["errors"] = errors
    body.update(extra)
    response = HttpResponse(json.dumps(body), status=status, content_type=PROBLEM_TYPE)
    for name, value in (headers or {}).items():
        response[name] = value
    response["Cache-Control"] = "no-store"
    return response


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None):
    """A plain JSON answer (``application/json``), not cached by intermediaries."""
    response = HttpResponse(json.dumps(data), status=status, content_type="application/json")
    for name, value in (headers or {}).items():
        response[name] = value
    response["Cache-Control"] = "no-store"
    return response


def endpoint(*methods: str) -> Callable:
    """An API view: no CSRF, these methods only (405 with ``Allow`` otherwise), and a raised
    ``Problem`` answered as problem+json."""
    allowed = tuple(m.upper() for m in methods)

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.method not in allowed and not (
                request.method == "HEAD" and "GET" in allowed
            ):
                return problem(
                    405,
                    f"{request.method} is not allowed here.",
                    headers={"Allow": ", ".join(allowed)},
                )
            try:
                return view(request, *args, **kwargs)
            except Problem as exc:
                return exc.response()

        return wrapper

    return decorate


def _is_api(path: str, prefixes: Iterable[str] = PREFIXES) -> bool:
    return path.startswith(tuple(prefixes))


class ProblemMiddleware:
    """Under /api/ and /otlp/: an unexpected exception becomes a logged 500 problem (no
    traceback page, even with DEBUG), and an error answered by Django itself (404 from the
    URL map, CSRF's 403, a too-large body's 400) is re-dressed as problem+json."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not _is_api(request.path_info):
            return self.get_response(request)
        response = self.get_response(request)
        if response.status_code >= 400 and not response.get("Content-Type", "").startswith(
            PROBLEM_TYPE
        ):
            headers = {
                name: response[name]
                for name in ("Allow", "Retry-After", "WWW-Authenticate")
                if response.has_header(name)
            }
            return problem(response.status_code, headers=headers)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception):
        if not _is_api(request.path_info):
            return None
        if isinstance(exception, Problem):
            return exception.response()
        logger.exception("api: unhandled error on %s %s", request.method, request.path_info)
        return problem(500, "The error has been logged.")
