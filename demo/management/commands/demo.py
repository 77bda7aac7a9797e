"""Set up the demo: a demo user (password printed once) and demo integrations with history."""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from demo import webhooks as demo_webhooks
from demo.scenario import DEMO_INTEGRATIONS, seed_history, setup_demo_probes
from monitoring import scorecard
from monitoring.models import Integration
from monitoring.roles import Role

# Where the demo's alert e-mails go: `make run` writes them to var/mail/ (file backend).
DEMO_EMAIL = "demo@example.com"


class Command(BaseCommand):
    help = "Create the demo user and demo data (idempotent; the password is printed only once)."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="demo")

    def handle(self, *args, username: str, **options):
        User = get_user_model()
        if User.objects.filter(username=username).exists():
            # Demos set up before users had an address get one: else no alert reaches anyone.
            User.objects.filter(username=username, email="").update(email=DEMO_EMAIL)
            self.stdout.write(
                f"Demo user {username!r} exists (its password was printed when it was created; "
                f"reset it with: python manage.py changepassword {username})."
            )
        else:
            password = secrets.token_urlsafe(12)
            user = User.objects.create_superuser(
                username=username, email=DEMO_EMAIL, password=password
            )
            user.groups.add(Group.objects.get(name=Role.ADMIN))
            banner = "=" * 64
            self.stdout.write(
                f"{banner}\n  Demo sign-in: http://127.0.0.1:8000/\n"
                f"  username: {username}\n  password: {password}\n"
                f"  (shown once; reset with: python manage.py changepassword {username})\n{banner}"
            )
        demo_probes = setup_demo_probes()
        # The demo user owns the demo integrations, so their alerts have someone to tell.
        email = User.objects.filter(username=username).values_list("email", flat=True).first()
        Integration.objects.filter(
            slug__in=[d.slug for d in DEMO_INTEGRATIONS], owner_email=""
        ).update(owner_email=email or DEMO_EMAIL)
        self.stdout.write(f"Alert e-mails for the demo integrations go to {email or DEMO_EMAIL}.")
        self.stdout.write(f"Demo probes: {len(demo_probes)} against the sandbox.")
        hooks = demo_webhooks.setup_demo_webhooks()
        hooked = demo_webhooks.seed_webhook_history()
        self.stdout.write(
            f"Demo webhooks: {len(hooks)} endpoints"
            + (f", {hooked} deliveries over the last day." if hooked else ".")
        )
        seeded = seed_history()
        self.stdout.write(
            f"Demo history: {seeded} request rows over the last 7 days."
            if seeded
            else "Demo history: already seeded."
        )
        # Graded now, from the history just written: the scorecard pages show grades at once
        # (the worker's upstream:scorecards task keeps them fresh from then on).
        graded = []
        demo_integrations = Integration.objects.filter(
            slug__in=[d.slug for d in DEMO_INTEGRATIONS],
            environment__in=[d.environment for d in DEMO_INTEGRATIONS],
            active=True,
        )
        for integration in demo_integrations.order_by("name", "environment"):
            report = scorecard.refresh(integration)
            graded.append(f"{integration} {report.letter}")
        self.stdout.write("Demo scorecards: " + ", ".join(graded) + ".")
