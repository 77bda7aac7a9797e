"""View decorators that apply monitoring.roles.can to every screen and action."""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied

from monitoring.roles import Action, can


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
