"""View decorators that guard every screen: roles on pages and actions, throttled sign-ins."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.exceptions import PermissionDenied
from django.dispatch import receiver
from django.http import HttpResponse

from dashboard.errors import too_many_attempts
from monitoring import audit, throttle
from monitoring.roles import Action, can

# Set on a request by the sign-in signals: what authenticate() concluded, and for which name.
_VERDICT = "_upstream_signin_verdict"


def role_required(action: Action | str):
    """Anonymous → sign-in page; signed in without the role → 403."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not can(request.user, action):
                raise PermissionDenied(f"Your role may not {action}.")
            return view(request, *args, **kwargs)

        return login_required(wrapper)

    return decorator


def throttled_signin(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A sign-in view that refuses a locked-out username or address with 429 before the
    password is checked: no hash is computed and no sign-in happens, right password or not.
    """

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.method != "POST":
            return view(request, *args, **kwargs)
        name, address = request.POST.get("username", ""), audit.client_ip(request)
        lock = throttle.SIGNIN.check(name, address)
        if lock is not None:
            throttle.SIGNIN.refused(lock, request=request, name=name)
            return too_many_attempts(request, lock.retry_after())
        response = view(request, *args, **kwargs)
        # Only what authenticate() decided counts: a form refused before it (a blank or
        # overlong field) cost no hash and guessed nothing.
        verdict = getattr(request, _VERDICT, None)
        if verdict is not None and verdict[0] == "failed":
            throttle.SIGNIN.failed(verdict[1], address)
        elif verdict is not None:
            throttle.SIGNIN.succeeded(verdict[1])
        return response

    return wrapper


@receiver(user_login_failed)
def _note_failure(sender, credentials, request=None, **kwargs):
    if request is not None:
        setattr(request, _VERDICT, ("failed", str(credentials.get("username", ""))))


@receiver(user_logged_in)
def _note_success(sender, request, user, **kwargs):
    if request is not None:
        setattr(request, _VERDICT, ("succeeded", user.get_username()))
