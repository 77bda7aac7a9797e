"""Response rules for every page: debug mode only on loopback, private pages, a strict CSP."""

from __future__ import annotations

import ipaddress
import zoneinfo

from django.conf import settings
from django.contrib.auth.signals import user_logged_in
from django.core.checks import Error
from django.dispatch import receiver
from django.http import HttpResponse
from django.http.request import split_domain_port
from django.utils import timezone
from django.utils.cache import patch_cache_control

POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        # Django's admin and Chart.js set inline styles; scripts stay strict.
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

DEBUG_REFUSAL = (
    "Upstream runs with DEBUG on, which shows settings and code in error pages, so it answers "
    "only on this machine (127.0.0.1, localhost). A deployment sets DEBUG=0.\n"
)
# The test client's host name: on no network, so harmless in ALLOWED_HOSTS.
_TEST_HOST = "testserver"


def is_loopback(host: str) -> bool:
    """A loopback address or name: 127.0.0.0/8, ::1, localhost and *.localhost (RFC 6761)."""
    host = host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_debug_is_local(app_configs, **kwargs) -> list[Error]:
    """DEBUG with a public name in ALLOWED_HOSTS is a deployment that forgot DEBUG=0."""
    if not settings.DEBUG:
        return []
    public = [h for h in settings.ALLOWED_HOSTS if h != _TEST_HOST and not is_loopback(h)]
    if not public:
        return []
    return [
        Error(
            f"DEBUG is on while ALLOWED_HOSTS names {', '.join(public)}: debug pages would show "
            "settings and code to anyone who reaches this server",
            hint="Set DEBUG=0 for a deployment (SECRET_KEY is then required). DEBUG=1 is for "
            "this machine only: leave ALLOWED_HOSTS unset with it.",
            id="dashboard.E001",
        )
    ]


class DebugOnlyOnLoopbackMiddleware:
    """While DEBUG is on, refuse any client or Host that is not loopback (before anything
    else can fail and show a debug page). The system check stops `manage.py` commands;
    this covers a server that never runs them, such as gunicorn."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if settings.DEBUG:
            raw_host = request.META.get("HTTP_HOST") or request.META.get("SERVER_NAME", "")
            host, _port = split_domain_port(raw_host)
            client = request.META.get("REMOTE_ADDR", "")
            if not (is_loopback(host) and is_loopback(client)):
                return HttpResponse(DEBUG_REFUSAL, status=403, content_type="text/plain")
        return self.get_response(request)


class PrivatePagesMiddleware:
    """Signed-in pages show names, addresses and errors: no shared or browser cache keeps
    them (`private, no-store`), so Back after signing out and a proxy show nothing."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            patch_cache_control(response, private=True, no_store=True)
        return response


class ContentSecurityPolicyMiddleware:
    """A strict Content-Security-Policy for every response (no inline or eval'd script)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", POLICY)
        return response


# The session key holding the signed-in user's time zone ("" for UTC): set at sign-in and
# when the profile is saved, so a page costs no query for it.
ZONE_SESSION_KEY = "upstream_tz"
# Machine-facing URLs (the api app's) stay UTC even for a browser that is signed in.
_MACHINE = ("/api/", "/otlp/", "/hooks/")


def _stored_zone(user) -> str:
    from monitoring.models import NotificationPreference

    zone = (
        NotificationPreference.objects.filter(user=user).values_list("time_zone", flat=True).first()
    )
    return zone or ""


@receiver(user_logged_in)
def _remember_zone(sender, request, user, **kwargs):
    if request is not None and hasattr(request, "session"):
        request.session[ZONE_SESSION_KEY] = _stored_zone(user)


class TimeZoneMiddleware:
    """Render pages in the signed-in user's zone (their profile's); URLs, forms' stored
    values and the API stay UTC, because only rendering and form input read the active zone.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        zone = ""
        if user is not None and user.is_authenticated and not request.path.startswith(_MACHINE):
            zone = request.session.get(ZONE_SESSION_KEY)
            if zone is None:  # a session from before this setting existed
                zone = request.session[ZONE_SESSION_KEY] = _stored_zone(user)
        try:
            tz = zoneinfo.ZoneInfo(zone) if zone else None
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            tz = None
        if tz is None:
            timezone.deactivate()
            return self.get_response(request)
        with timezone.override(tz):
            return self.get_response(request)
