"""Error pages that explain without leaking (JSON or a page), and one log line per refusal."""

from __future__ import annotations

import logging
import math

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.cache import add_never_cache_headers


def _wants_json(request) -> bool:
    return request.path.startswith("/api/") or "application/json" in request.headers.get(
        "Accept", ""
    )


def _respond(request, status: int, title: str, message: str):
    if _wants_json(request):
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


def _wait_text(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def too_many_attempts(request: HttpRequest, retry_after: int) -> HttpResponse:
    """429 for a locked-out sign-in: the sign-in page again, saying when to come back."""
    message = f"Too many failed sign-ins. Try again in {_wait_text(retry_after)}."
    if _wants_json(request):
        response = JsonResponse({"error": "Too many attempts", "detail": message}, status=429)
    else:
        # Imported here: LOGGING loads this module (for its filter) before the app registry.
        from django.contrib.auth.forms import AuthenticationForm

        # Unbound: a bound form would check the password while rendering its errors.
        form = AuthenticationForm(request, initial={"username": request.POST.get("username", "")})
        default_next = "/admin/" if request.path.startswith("/admin/") else ""
        context = {
            "form": form,
            "locked_message": message,
            "next": request.POST.get("next") or request.GET.get("next") or default_next,
        }
        response = render(request, "registration/login.html", context, status=429)
    response["Retry-After"] = str(retry_after)
    # Like the sign-in page it stands in for: it holds a CSRF token.
    add_never_cache_headers(response)
    return response


class OneLineForbidden(logging.Filter):
    """Log a refused request (403) as one line with its reason instead of a traceback:
    a role saying no is expected, and tracebacks would bury the errors that matter."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "status_code", None) != 403 or not record.exc_info:
            return True
        reason = str(record.exc_info[1] or "").replace("\n", " ")[:300]
        user = getattr(getattr(record, "request", None), "user", None)
        who = user.get_username() if user is not None and user.is_authenticated else "anonymous"
        message = record.getMessage()
        record.msg = f"{message} (user {who}{': ' + reason if reason else ''})"
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        return True
