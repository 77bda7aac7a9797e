"""The real stripe SDK (16.x, on requests) through upstream_client against a loopback Stripe."""

from __future__ import annotations

import pytest
import requests
import stripe
import upstream_client.requests
from upstream_client import RetryPolicy

from tests.sdk import fakes
from tests.sdk.fakes import assert_no_secret, recording, rows, spooled_events  # noqa: F401

KEY = "sk_test_51FakeStripeKeyForTestsOnly0123456789abcdefghijklmnopqrstuv"
pytestmark = pytest.mark.usefixtures("recording")


@pytest.fixture(scope="module")
def fake():
    running = fakes.Stripe(KEY)
    yield running
    running.close()


@pytest.fixture(autouse=True)
def _fresh(fake):
    fake.reset()


def client(fake, session: requests.Session | None = None, key: str = KEY, retries: int = 2):
    http = stripe.RequestsClient(session=session) if session is not None else None
    return stripe.StripeClient(
        key, base_addresses={"api": fake.url}, http_client=http, max_network_retries=retries
    )


def captured(fake, retry: RetryPolicy | None = None, **options) -> stripe.StripeClient:
    session = upstream_client.requests.Session(integration="stripe", retry=retry)
    return client(fake, session, **options)


def scenario(stripe_client: stripe.StripeClient, fake: fakes.Stripe, session=None) -> list:
    """What an app does with the SDK; returns everything it got back."""
    customers = stripe_client.v1.customers
    out = []
    first = customers.create(params={"email": "ada@example.com"})
    out.append(first.to_dict())
    out.append(customers.retrieve(first.id).to_dict())
    for n in range(4):
        customers.create(params={"email": f"user{n}@example.com"})
    out.append([c.id for c in customers.list(params={"limit": 2}).auto_paging_iter()])
    with pytest.raises(stripe.CardError) as declined:
        stripe_client.v1.charges.create(
            params={"amount": 2000, "currency": "usd", "source": "tok_chargeDeclined"}
        )
    out.append((declined.value.http_status, declined.value.code, declined.value.json_body))
    fake.script(409)  # lock_timeout: the SDK retries it with the same Idempotency-Key
    charge = stripe_client.v1.charges.create(
        params={"amount": 500, "currency": "eur", "source": "tok_visa"}
    )
    out.append(charge.to_dict())
    with pytest.raises(stripe.AuthenticationError) as denied:
        client(fake, session, key="sk_test_wrong").v1.customers.list()
    out.append((denied.value.http_status, denied.value.user_message))
    return out


def test_same_results_with_and_without_upstream_and_one_row_per_request(fake):
    expected = scenario(client(fake), fake)
    sent_plain = len(fake.requests)
    fake.reset()
    session = upstream_client.requests.Session(integration="stripe")
    got = scenario(client(fake, session), fake, session)
    assert got == expected
    assert len(fake.requests) == sent_plain == 13
    found = rows("stripe")
    assert len(found) == len(fake.requests)
    assert [r.status for r in found] == [200] * 9 + [402, 409, 200, 401]
    # Customer ids collapse into one template: one series, not one per customer.
    assert {r.path for r in found} == {"/v1/customers", "/v1/customers/{id}", "/v1/charges"}
    assert found[0].api_version == fakes.Stripe.VERSION
    assert_no_secret(KEY, found)


def test_mount_captures_a_session_the_app_already_has(fake):
    session = requests.Session()
    session.headers["X-App"] = "billing"
    upstream_client.requests.mount(session, integration="stripe")
    scenario(client(fake, session), fake, session)
    assert len(rows("stripe")) == len(fake.requests) == 13


def test_sdk_retries_are_attempts_of_one_call(fake):
    fake.script(409, 500)
    customer = captured(fake).v1.customers.create(params={"email": "ada@example.com"})
    assert customer.id.startswith("cus_")
    keys = {r.headers["idempotency-key"] for r in fake.requests}
    assert len(keys) == 1  # Stripe resent the same Idempotency-Key
    found = rows("stripe")
    assert [(r.status, r.attempt) for r in found] == [(409, 1), (500, 2), (200, 3)]
    assert len({r.call_id for r in found}) == 1
    assert all(r.backoff_ms > 0 for r in found[1:])
    assert found[0].error_code == "lock_timeout"


def test_both_retry_layers_send_at_most_three_requests(fake):
    fake.script(*[500] * 9)
    stripe_client = captured(fake, retry=RetryPolicy(max_attempts=3, backoff=0.01))
    with pytest.raises(stripe.APIError):
        stripe_client.v1.customers.create(params={"email": "ada@example.com"})
    assert len(fake.requests) == 3
    assert [r.attempt for r in rows("stripe")] == [1, 2, 3]


def test_a_stripe_should_retry_false_answer_is_not_retried_by_either_layer(fake):
    fake.script((500, {"Stripe-Should-Retry": "false"}))
    stripe_client = captured(fake, retry=RetryPolicy(max_attempts=3, backoff=0.01))
    with pytest.raises(stripe.APIError):
        stripe_client.v1.customers.create(params={"email": "ada@example.com"})
    assert len(fake.requests) == 1
    (row,) = rows("stripe")
    assert (row.status, row.attempt) == (500, 1)


def test_the_key_reaches_neither_the_database_nor_the_spool_nor_the_logs(fake, tmp_path, caplog):
    from upstream_client.ship import Shipper

    caplog.set_level("DEBUG", "upstream_client")
    caplog.set_level("DEBUG", "monitoring")
    session = upstream_client.requests.Session(integration="stripe")
    scenario(client(fake, session), fake, session)
    assert_no_secret(KEY, rows("stripe"), caplog)
    down = Shipper("http://127.0.0.1:9", "up_Spool123_key", spool_dir=tmp_path, max_backoff=60)
    session = upstream_client.requests.Session(integration="stripe", sink=down)
    fake.reset()
    scenario(client(fake, session), fake, session)
    down.flush(timeout=1)
    down.close(timeout=0.5)
    spooled = spooled_events(tmp_path)
    assert len(spooled) == 13
    assert_no_secret(KEY, spooled)
