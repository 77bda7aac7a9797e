"""Request and token budgets apart (Anthropic and OpenAI headers); the tightest drives the
"min quota left" figure and the rate-limit headroom rule."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from django.db import transaction

from monitoring import attempts, metrics, recorder, storage
from monitoring.alerts import lifecycle
from monitoring.metrics import _quota
from monitoring.models import Alert, AlertRule, MetricBucket, RequestLog, RuleKind
from monitoring.parsing import parse_rate_limit, tighter
from tests.monitoring.alerts.alertkit import T0, make_integration

NOW = T0.timestamp()
MIN = dt.timedelta(minutes=1)


def anthropic(requests=(50, 49), tokens=(40_000, 1_200), input_tokens=None, output_tokens=None):
    """Anthropic's rate-limit headers: (limit, remaining) per budget, resets in RFC 3339."""
    headers = {}
    for kind, budget in (
        ("requests", requests),
        ("tokens", tokens),
        ("input-tokens", input_tokens),
        ("output-tokens", output_tokens),
    ):
        if budget is not None:
            headers[f"anthropic-ratelimit-{kind}-limit"] = str(budget[0])
            headers[f"anthropic-ratelimit-{kind}-remaining"] = str(budget[1])
            headers[f"anthropic-ratelimit-{kind}-reset"] = "2026-03-10T12:03:00Z"
    return headers


# --- parsing ----------------------------------------------------------------------------------


def test_anthropic_request_and_token_budgets_are_read_apart():
    limits = parse_rate_limit(anthropic(), NOW)
    assert (limits.limit, limits.remaining) == (50, 49)
    assert (limits.token_limit, limits.token_remaining) == (40_000, 1_200)
    reset = dt.datetime(2026, 3, 10, 12, 3, tzinfo=dt.UTC).timestamp()
    assert limits.reset_at == limits.token_reset_at == reset


def test_without_the_combined_token_headers_the_tighter_of_input_and_output_counts():
    headers = anthropic(tokens=None, input_tokens=(400_000, 390_000), output_tokens=(8_000, 400))
    limits = parse_rate_limit(headers, NOW)
    assert (limits.token_limit, limits.token_remaining) == (8_000, 400)


@pytest.mark.parametrize(
    ("reset", "seconds"), [("6m0s", 360.0), ("1.5s", 1.5), ("20ms", 0.02), ("1h2m3s", 3723.0)]
)
def test_openai_token_budgets_with_go_durations(reset, seconds):
    headers = {
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "499",
        "x-ratelimit-reset-requests": "120ms",
        "x-ratelimit-limit-tokens": "30000",
        "x-ratelimit-remaining-tokens": "29000",
        "x-ratelimit-reset-tokens": reset,
    }
    limits = parse_rate_limit(headers, NOW)
    assert (limits.limit, limits.remaining, limits.reset_at) == (500, 499, NOW + 0.12)
    assert (limits.token_limit, limits.token_remaining) == (30_000, 29_000)
    assert limits.token_reset_at == pytest.approx(NOW + seconds)


def test_bad_budget_values_are_dropped_not_raised():
    headers = anthropic(requests=("lots", "-3"), tokens=(2**40, 5))
    headers["anthropic-ratelimit-tokens-reset"] = "soon"
    limits = parse_rate_limit(headers, NOW)
    assert (limits.limit, limits.remaining) == (None, None)
    assert (limits.token_limit, limits.token_remaining, limits.token_reset_at) == (None, 5, None)


def test_tighter_means_a_lower_share_left():
    assert tighter((1_200, 40_000), (49, 50))  # 3 % of tokens beats 98 % of requests
    assert not tighter((45, 50), (1_200, 40_000))
    assert tighter((0, None), (1, 1_000))  # spent, limit unknown
    assert tighter((999, 1_000), (3, None))  # an unknown limit ranks after a known share


# --- rows, buckets, metrics, the rule --------------------------------------------------------


@pytest.fixture
def claude(db):
    attempts.clear_policies()
    yield make_integration("Claude")
    attempts.clear_policies()


def store(integration, when, headers, n=1, path="/v1/messages"):
    rows = [
        attempts.to_row(
            attempts.from_fields(
                integration=integration,
                source="client",
                created=when,
                method="POST",
                url=f"https://api.anthropic.com{path}",
                status=200,
                latency_ms=800.0,
                response_headers=headers,
            )
        )
        for _ in range(n)
    ]
    with transaction.atomic():
        storage.insert_rows(rows, rollup=True)


def test_rows_keep_both_budgets(claude):
    store(claude, T0, anthropic())
    row = RequestLog.objects.get()
    assert (row.ratelimit_limit, row.ratelimit_remaining) == (50, 49)
    assert (row.token_limit, row.token_remaining) == (40_000, 1_200)
    assert row.token_reset == dt.datetime(2026, 3, 10, 12, 3, tzinfo=dt.UTC)


def test_the_tight_token_budget_is_the_min_quota_left(claude):
    store(claude, T0 - 2 * MIN, anthropic(requests=(50, 45), tokens=(40_000, 39_000)))
    store(claude, T0 - MIN, anthropic(requests=(50, 49), tokens=(40_000, 1_200)))
    store(claude, T0, anthropic(requests=(50, 20), tokens=(40_000, 30_000)))
    end = T0 + MIN
    summary = metrics.summary([claude.pk], end - dt.timedelta(hours=1), end, now=end)
    # 1,200 of 40,000 (3 %) is tighter than 20 of 50 (40 %), though 20 < 1,200.
    assert (summary.ratelimit_remaining_min, summary.ratelimit_limit) == (1_200, 40_000)
    hour = MetricBucket.objects.get(grain="hour", endpoint="")
    assert (hour.ratelimit_remaining_min, hour.ratelimit_limit) == (1_200, 40_000)


def test_the_headroom_rule_fires_on_the_token_budget(clock, claude):
    AlertRule.objects.create(name="Quota", kind=RuleKind.RATE_LIMIT)
    store(claude, T0, anthropic(requests=(50, 49), tokens=(40_000, 1_200)))
    lifecycle.evaluate()
    assert Alert.objects.get().title == (
        "Claude · production — rate-limit headroom 3 % (1,200 of 40,000 left)"
    )


def test_request_budgets_alone_fire_as_before(clock, claude):
    AlertRule.objects.create(name="Quota", kind=RuleKind.RATE_LIMIT)
    store(claude, T0, anthropic(requests=(50, 2), tokens=None))
    lifecycle.evaluate()
    assert Alert.objects.get().title == (
        "Claude · production — rate-limit headroom 4 % (2 of 50 left)"
    )


def test_the_quota_key_gives_back_every_pair_exactly(claude):
    # The read packs (share, limit) into one integer for the database's MIN: each pair
    # written to a bucket must come back as it was.
    rng = random.Random(9)
    pairs = [(0, None), (7, None), (0, 100), (100, 100), (150, 100), (1, 2**30 - 1)]
    pairs += [(1_073_741_822, 1_073_741_823), (2**31 - 2, 2**31 - 1)]
    for _ in range(40):
        limit = rng.choice([rng.randint(1, 60), rng.randint(1, 10**6), rng.randint(1, 2**30)])
        pairs.append((rng.randint(0, limit), limit))
    base = {"integration": claude, "grain": "minute", "source": "client", "histogram": b""}
    start = T0.replace(second=0)
    for i, (remaining, limit) in enumerate(pairs):
        MetricBucket.objects.create(
            **base,
            start=start,
            endpoint=f"GET /v{i}",
            total=1,
            ratelimit_remaining_min=remaining,
            ratelimit_limit=limit,
        )
        got = metrics.summary(
            [claude.pk], start, start + MIN, endpoint=f"GET /v{i}", now=start + MIN
        )
        want = (min(remaining, limit), limit) if limit and remaining > limit else (remaining, limit)
        if limit and limit > 2**30:
            assert abs(got.ratelimit_remaining_min - want[0]) <= 1 and got.ratelimit_limit == limit
        else:
            assert (got.ratelimit_remaining_min, got.ratelimit_limit) == want, (remaining, limit)
    assert _quota(2**32 - 1) == (0, None)


@pytest.mark.django_db(transaction=True)
def test_a_spooled_row_keeps_its_token_reset(claude):
    # The spool writes datetimes as text; token_reset comes back a datetime, like the rest.
    row = attempts.to_row(
        attempts.from_fields(
            integration=claude,
            source="client",
            created=T0,
            method="POST",
            url="https://api.anthropic.com/v1/messages",
            status=200,
            latency_ms=5.0,
            response_headers=anthropic(),
        )
    )
    assert recorder.spill_now([row])
    recorder.flush(timeout=30)
    stored = RequestLog.objects.get()
    assert stored.token_reset == dt.datetime(2026, 3, 10, 12, 3, tzinfo=dt.UTC)
