"""Dedupe of event and delivery ids: the database table, and Redis when the cache is Redis."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest
import redis
from django.core.cache import caches
from django.utils import timezone

from monitoring.models import WebhookSeen
from monitoring.webhooks import dedupe
from tests.monitoring.webhooks.hookkit import make_endpoint

pytestmark = pytest.mark.django_db


def test_an_id_is_new_once_within_the_window_per_endpoint():
    one, two = make_endpoint("none"), make_endpoint("none")
    assert dedupe.first_time(one.pk, "evt_1", 300)
    assert not dedupe.first_time(one.pk, "evt_1", 300)
    assert dedupe.first_time(two.pk, "evt_1", 300)  # another endpoint's ids are its own
    assert dedupe.first_time(one.pk, "evt_2", 300)
    assert WebhookSeen.objects.count() == 3
    # The id itself is not stored, only its hash (ids are unbounded text).
    assert not WebhookSeen.objects.filter(key__contains="evt").exists()


def test_the_window_is_at_least_the_replay_window_and_a_day():
    assert dedupe.window_s(300) == dedupe.MIN_WINDOW_S
    assert dedupe.window_s(9 * 86400) == 9 * 86400


def test_an_id_seen_before_the_window_counts_as_new_again():
    endpoint = make_endpoint("none")
    assert dedupe.first_time(endpoint.pk, "evt_old", 300)
    WebhookSeen.objects.update(created=timezone.now() - timedelta(days=5))
    assert dedupe.first_time(endpoint.pk, "evt_old", 300)
    assert not dedupe.first_time(endpoint.pk, "evt_old", 300)
    assert WebhookSeen.objects.count() == 1


def test_prune_drops_old_ids_but_keeps_long_windows():
    short, long = make_endpoint("none"), make_endpoint("none", replay_window_s=9 * 86400)
    for endpoint in (short, long):
        dedupe.first_time(endpoint.pk, "evt", endpoint.replay_window_s)
        dedupe.first_time(endpoint.pk, "evt_new", endpoint.replay_window_s)
    WebhookSeen.objects.exclude(key=dedupe.key_of("evt_new")).update(
        created=timezone.now() - timedelta(days=6)
    )
    assert dedupe.prune() == 1
    assert set(WebhookSeen.objects.values_list("endpoint_id", flat=True)) == {short.pk, long.pk}
    assert WebhookSeen.objects.filter(endpoint=long).count() == 2


@pytest.fixture
def redis_cache(settings):
    url = "redis://127.0.0.1:6379/15"
    redis.Redis.from_url(url).ping()
    settings.CACHES = {
        **settings.CACHES,
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "KEY_PREFIX": f"test-hooks-{secrets.token_hex(4)}",
        },
    }
    yield caches["default"]
    # Only this test's keys go: never FLUSHDB a server others may share.
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(f"{settings.CACHES['default']['KEY_PREFIX']}:*"):
        client.delete(key)


def test_with_redis_the_cache_remembers_and_no_row_is_written(redis_cache):
    endpoint = make_endpoint("none")
    assert dedupe._uses_redis()
    assert dedupe.first_time(endpoint.pk, "evt_r", 300)
    assert not dedupe.first_time(endpoint.pk, "evt_r", 300)
    assert dedupe.first_time(endpoint.pk, "evt_s", 300)
    assert not WebhookSeen.objects.exists()


@pytest.fixture
def own_connection(transactional_db):
    yield
    dedupe.stop()  # its connection must not outlive the test database


def test_outside_a_transaction_it_answers_on_its_own_connection(own_connection):
    from django.db import connection

    endpoint = make_endpoint("none")
    connection.close()
    assert dedupe.first_time(endpoint.pk, "evt_own", 300)
    assert not dedupe.first_time(endpoint.pk, "evt_own", 300)
    # The request's connection was not opened for it (on SQLite that costs ten inserts).
    assert connection.connection is None
    row = WebhookSeen.objects.get()
    assert row.key == dedupe.key_of("evt_own")
    assert abs((timezone.now() - row.created).total_seconds()) < 60  # stored as the ORM reads


def test_a_dropped_connection_is_reopened_and_the_duplicate_still_caught(own_connection):
    endpoint = make_endpoint("none")
    assert dedupe.first_time(endpoint.pk, "evt_drop", 300)
    dedupe._own[1].connection.close()  # the server went away under it
    assert not dedupe.first_time(endpoint.pk, "evt_drop", 300)
    assert dedupe.first_time(endpoint.pk, "evt_next", 300)


def test_stop_closes_its_connection_and_the_next_call_opens_one(own_connection):
    endpoint = make_endpoint("none")
    assert dedupe.first_time(endpoint.pk, "evt_a", 300)
    first = dedupe._own[1]
    dedupe.stop()
    assert first.connection is None
    assert not dedupe.first_time(endpoint.pk, "evt_a", 300)
    assert dedupe._own[1] is not first
