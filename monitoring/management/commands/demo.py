"""Set up the demo: a demo user (password printed once) and demo integrations with history."""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from monitoring.roles import Role


class Command(BaseCommand):
    help = "Create the demo user and demo data (idempotent; the password is printed only once)."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="demo")

    def handle(self, *args, username: str, **options):
        User = get_user_model()
        if User.objects.filter(username=username).exists():
            self.stdout.write(
                f"Demo user {username!r} exists (its password was printed when it was created; "
                f"reset it with: python manage.py changepassword {username})."
            )
        else:
            password = secrets.token_urlsafe(12)
            user = User.objects.create_superuser(username=username, email="", password=password)
            user.groups.add(Group.objects.get(name=Role.ADMIN))
            banner = "=" * 64
            self.stdout.write(
                f"{banner}\n  Demo sign-in: http://127.0.0.1:8000/\n"
                f"  username: {username}\n  password: {password}\n"
                f"  (shown once; reset with: python manage.py changepassword {username})\n{banner}"
            )
        from monitoring.probes import setup_demo_probes

        demo_probes = setup_demo_probes()
        self.stdout.write(f"Demo probes: {len(demo_probes)} against the sandbox.")
        from monitoring.demo import seed_history

        seeded = seed_history()
        self.stdout.write(
            f"Demo history: {seeded} request rows over the last 7 days."
            if seeded
            else "Demo history: already seeded."
        )
