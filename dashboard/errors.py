"""Error pages that explain without leaking: JSON for API/HTMX callers, a page for people."""

from __future__ import annotations

from django.http import JsonResponse
from django.shortcuts import render


def _respond(request, status: int, title: str, message: str):
    wants_json = request.path.startswith("/api/") or "application/json" in request.headers.get(
        "Accept", ""
    )
    if wants_json:
        return JsonResponse({"error": title, "detail": message}, status=status)
    context = {"status": status, "title": title, "message": message}
    return render(request, "error.html", context, status=status)


def bad_request(request, exception=None):
    return _respond(request, 400, "Bad request", "The request could not be understood.")


def forbidden(request, exception=None):
    detail = str(exception) if exception and str(exception) else "Your role does not allow this."
    return _respond(request, 403, "Not allowed", detail)


def not_found(request, exception=None):
    return _respond(request, 404, "Not found", "There is nothing at this address.")


def server_error(request):
    return _respond(request, 500, "Something went wrong", "The error has been logged.")
