"""The evaluation cycle's reads: per-endpoint counters read once per window for everyone."""

from __future__ import annotations

import datetime as dt

from monitoring.alerts.snapshot import BucketData
from monitoring.models import Integration
from tests.monitoring.alerts.alertkit import T0, calls, make_integration


def traffic() -> list[Integration]:
    made = [make_integration(name) for name in ("Paubox", "Stripe", "Twilio")]
    for n, integration in enumerate(made):
        calls(integration, T0 - dt.timedelta(minutes=2), 10 + n, status=200)
        calls(integration, T0, 3 + n, status=503, method="POST", path="/v1/messages")
        calls(integration, T0 - dt.timedelta(minutes=20), 50, status=500)  # outside 5 min
    return made


def test_short_windows_read_every_integrations_endpoints_in_one_query(
    db, django_assert_num_queries
):
    made = traffic()
    data = BucketData(T0, {i.pk: i for i in made})
    with django_assert_num_queries(1):
        first = data.endpoints(5, made[0].pk)
        others = [data.endpoints(5, i.pk) for i in made[1:]]

    for n, counts in enumerate([first, *others]):
        assert sorted(counts) == ["GET /v1/messages/{id}", "POST /v1/messages"]
        assert counts["GET /v1/messages/{id}"].total == 10 + n
        assert counts["POST /v1/messages"].server_errors == 3 + n


def test_the_batched_read_equals_one_integration_read_alone(db):
    made = traffic()
    batched = BucketData(T0, {i.pk: i for i in made}).endpoints(5, made[1].pk)
    alone = BucketData(T0, {made[1].pk: made[1]}).endpoints(5, made[1].pk)
    hour_grain = BucketData(T0, {i.pk: i for i in made}).endpoints(24 * 60, made[1].pk)

    assert {k: vars_of(v) for k, v in batched.items()} == {k: vars_of(v) for k, v in alone.items()}
    # A long window reads hour buckets, one integration at a time: the 20-minute-old 500s too.
    assert hour_grain["GET /v1/messages/{id}"].server_errors == 50


def test_an_integration_without_traffic_gets_no_endpoints(db):
    made = traffic()
    quiet = make_integration("Quiet")
    data = BucketData(T0, {i.pk: i for i in [*made, quiet]})
    assert data.endpoints(5, quiet.pk) == {}


def vars_of(counts) -> dict:
    return {name: getattr(counts, name) for name in counts.__slots__}
