"""Shared fixtures: users for each role, and the audit log's test-only flush allowance."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from monitoring import audit
from monitoring.roles import Role

PASSWORD = "correct horse battery staple 42"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # The role fixtures set real passwords; the production hasher costs ~0.3 s per user.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_cache():
    # Sign-in throttle counters live in Django's cache, process-wide: one test's failures
    # must not lock out the next test's user.
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True, scope="session")
def _private_spool_dir(tmp_path_factory):
    """Rows a test leaves unflushed must never spill into the real var/spool (and from there
    into the next `make run`)."""
    from django.conf import settings

    from monitoring import recorder

    settings.UPSTREAM["SPOOL_DIR"] = str(tmp_path_factory.mktemp("spool"))
    recorder.configure()
    yield


@pytest.fixture(autouse=True)
def _audit_flush_allowed(request):
    """Let transactional tests' database flush clear the append-only audit table.

    The triggers stay armed while the test body runs; only the flush after it (pytest-django
    empties every table with DELETE on SQLite) runs inside audit.maintenance().
    """
    audit._maintenance.on = False
    marker = request.node.get_closest_marker("django_db")
    transactional = (
        "transactional_db" in request.fixturenames
        or "live_server" in request.fixturenames
        or bool(marker and marker.kwargs.get("transaction"))
    )
    if not transactional:
        yield
        return
    # Requested here so that it is torn down (flushed) after this fixture's teardown.
    request.getfixturevalue("transactional_db")
    yield
    audit._maintenance.on = True  # switched off again when the next test starts


def _user(django_user_model, username: str, role: Role | None = None, **extra):
    user = django_user_model.objects.create_user(username=username, password=PASSWORD, **extra)
    if role is not None:
        user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def viewer(db, django_user_model):
    return _user(django_user_model, "vera", Role.VIEWER)


@pytest.fixture
def operator(db, django_user_model):
    return _user(django_user_model, "otto", Role.OPERATOR)


@pytest.fixture
def admin_user(db, django_user_model):
    return _user(django_user_model, "ada", Role.ADMIN, is_staff=True)


@pytest.fixture
def outsider(db, django_user_model):
    """Signed in, but with no role."""
    return _user(django_user_model, "olga")


@pytest.fixture
def superuser(db, django_user_model):
    return django_user_model.objects.create_superuser(username="root", password=PASSWORD)


@pytest.fixture
def integration(db):
    from monitoring.models import Integration

    return Integration.objects.create(
        name="Paubox", slug="paubox", environment="production", base_url="https://api.paubox.net"
    )
