"""Every dashboard URL: anonymous → sign-in, signed in without a role → 403, a Viewer → 200."""

from __future__ import annotations

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tests.conftest import PASSWORD

# Screens that are not behind a role: signing in and out.
PUBLIC = {"login", "logout"}


def _named_patterns(patterns=None, prefix=""):
    for p in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(p, URLResolver):
            if getattr(p, "app_name", None) == "admin":
                continue
            yield from _named_patterns(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern) and p.name and p.name not in PUBLIC:
            yield p


def _argless_get_screens():
    """URL names that take no arguments and answer GET (actions are tested with their views)."""
    names = []
    for p in _named_patterns():
        if p.pattern.regex.groups:
            continue
        view = p.callback
        allowed = getattr(view, "__wrapped__", None) and getattr(view, "allowed_methods", None)
        names.append(p.name)
        del allowed
    return sorted(set(names))


SCREENS = _argless_get_screens()


def test_there_are_screens_to_check():
    assert "overview" in SCREENS


@pytest.mark.parametrize("name", SCREENS)
def test_anonymous_visitors_are_sent_to_sign_in(client, db, name):
    url = reverse(name)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize("name", SCREENS)
def test_a_user_without_a_role_is_refused(client, outsider, name):
    client.force_login(outsider)
    response = client.get(reverse(name))
    assert response.status_code == 403


@pytest.mark.parametrize("name", SCREENS)
def test_a_viewer_can_read_every_screen(client, viewer, name):
    client.force_login(viewer)
    response = client.get(reverse(name))
    assert response.status_code in {200, 405}, name


def test_sign_in_then_overview_shows_the_shell(client, viewer, integration):
    response = client.post(
        reverse("login"), {"username": "vera", "password": PASSWORD}, follow=True
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert "Sign out" in body and "Viewer" in body
    assert "Paubox" in body


def test_pages_carry_a_strict_content_security_policy(client, viewer):
    client.force_login(viewer)
    csp = client.get(reverse("overview"))["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp


def test_unknown_urls_get_a_friendly_404_without_a_traceback(client, viewer):
    client.force_login(viewer)
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    assert b"Traceback" not in response.content
