"""The onboarding checklist's actions: a test e-mail, a key for the snippets, hiding the list."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from api.management.commands.create_api_key import create_key
from api.models import Scope
from dashboard import onboarding
from dashboard.access import role_required
from dashboard.views import is_partial
from monitoring.models import Integration, JobState
from monitoring.roles import Action


@role_required(Action.VIEW)  # first: a GET from a stranger goes to sign-in, not 405
@require_POST
def test_email(request):
    from monitoring.alerts.notify import send_test_email

    address = request.user.email
    if not address:
        messages.error(request, "Set your e-mail in your profile first.")
        return redirect("overview")
    result = send_test_email([address], "This is Upstream's test e-mail: delivery works.")
    if result.ok:
        JobState.objects.get_or_create(name=onboarding.EMAIL_OK_MARKER)
        messages.success(request, f"Sent a test e-mail to {address}.")
    else:
        messages.error(request, f"The test e-mail failed: {result.error}")
    return redirect("overview")


@role_required(Action.CONFIGURE)
@require_POST
def make_key(request):
    """An ingest key for the snippets, shown in this answer only: the database keeps only its
    hash, and it never rides in the session or a message cookie."""
    _key, text = create_key(
        name=f"onboarding ({request.user.get_username()})",
        scopes=[Scope.INGEST],
        integrations=[],
        request=request,
    )
    integration = Integration.objects.order_by("created").first()
    context = {"snippets": onboarding.snippets(integration, text), "key_made": True}
    template = "dashboard/_onboarding_snippets.html" if is_partial(request) else (
        "dashboard/onboarding_key.html"
    )  # fmt: skip
    response = render(request, template, context)
    response["Cache-Control"] = "no-store"
    return response


@role_required(Action.VIEW)  # first: a GET from a stranger goes to sign-in, not 405
@require_POST
def hide(request):
    request.session[onboarding.HIDDEN_SESSION_KEY] = True
    return redirect("overview")
