"""Dashboard screens; each module serves one screen and its HTMX actions."""

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import render
from django.utils.cache import patch_vary_headers

from dashboard.forms import BadInput

__all__ = ["BadInput", "bad_input", "is_partial", "render_page"]


def is_partial(request) -> bool:
    """An HTMX swap wants a fragment; a history restore (or any normal load) wants the page."""
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.history_restore_request


def render_page(request, template: str, context: dict, *, partial: str = "live", status: int = 200):
    """Render the page, or only its `partial` for an HTMX request."""
    name = f"{template}#{partial}" if is_partial(request) else template
    response = render(request, name, context, status=status)
    # Same URL, two bodies: caches must key on the header.
    patch_vary_headers(response, ["HX-Request"])
    return response


def bad_input(request, message: str) -> HttpResponse:
    """A 400 that says what was wrong: a fragment for HTMX (base.html lets htmx swap 400s into
    the request's target), the error page otherwise."""
    if is_partial(request):
        # Keep the target's id, so the next swap (a corrected filter, a refresh) finds it.
        context = {"message": message, "target": request.headers.get("HX-Target", "")}
        return render(request, "dashboard/_bad_input.html", context, status=400)
    return render(
        request,
        "error.html",
        {"status": 400, "title": "Bad request", "message": message},
        status=400,
    )
