"""Template context every page needs: the user's role and what they may do."""

from __future__ import annotations

from monitoring.roles import Action, can, role_label


def upstream(request) -> dict:
    user = getattr(request, "user", None)
    return {
        "role_label": role_label(user) if user is not None else "",
        "can_operate": can(user, Action.OPERATE) if user is not None else False,
        "can_configure": can(user, Action.CONFIGURE) if user is not None else False,
    }
