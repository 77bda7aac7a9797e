"""Path templates collapse providers' ids (prefixed and base62) to ``{id}``; words stay."""

from __future__ import annotations

import random
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitoring.parsing import template_path

BASE62 = string.ascii_letters + string.digits


def test_ten_thousand_random_stripe_customer_ids_give_one_template():
    # cus_ + 14 base62 characters; every tenth has no digit (the ids that used to stay raw).
    rng = random.Random(13)
    bodies = [
        "".join(rng.choices(string.ascii_letters if n % 10 == 0 else BASE62, k=14))
        for n in range(10_000)
    ]
    assert sum(not any(c.isdigit() for c in body) for body in bodies) >= 1_000
    templates = {template_path(f"/v1/customers/cus_{body}") for body in bodies}
    assert templates == {"/v1/customers/{id}"}


@settings(max_examples=1_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=BASE62, min_size=14, max_size=14))
def test_any_stripe_shaped_customer_id_gives_the_template(body):
    # Hypothesis tries the edge shapes: all one letter, all lower case, all digits.
    assert template_path(f"/v1/customers/cus_{body}") == "/v1/customers/{id}"


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(["ch_", "pi_", "msg_", "file-", "msgbatch_", "req_", "sk_live_", "evt_"]),
    st.text(alphabet=BASE62, min_size=24, max_size=24),
)
def test_other_prefixed_ids_collapse_too(prefix, body):
    assert template_path(f"/v1/things/{prefix}{body}/items") == "/v1/things/{id}/items"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # Real ids from the providers' documentation.
        ("/v1/customers/cus_NffrFeUfNV2Hib", "/v1/customers/{id}"),
        ("/v1/customers/cus_NffrFeUfNVhIbX", "/v1/customers/{id}"),  # no digit
        ("/v1/charges/ch_3MmlLrLkdIwHu7ix0snN0B15", "/v1/charges/{id}"),
        ("/v1/payment_intents/pi_3MtwBwLkdIwHu7ix28a3tqPa", "/v1/payment_intents/{id}"),
        ("/v1/messages/msg_01XFDUDYJgAACzvnptvVoYEL", "/v1/messages/{id}"),
        ("/v1/messages/batches/msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d", "/v1/messages/batches/{id}"),
        ("/v1/files/file-abc123def456ghi789jkl012", "/v1/files/{id}"),
        ("/v1/requests/req_011CSHoEeqs5C35K2UUqR7Fy", "/v1/requests/{id}"),
        # Bare base62 ids of 10 or more characters.
        ("/v1/objects/NffrFeUfNV", "/v1/objects/{id}"),
        ("/v1/objects/a1b2c3d4e5", "/v1/objects/{id}"),
        ("/v1/customers/cus_NffrFeUfNV2Hib/sources", "/v1/customers/{id}/sources"),
    ],
)
def test_provider_ids_collapse_to_id(path, expected):
    assert template_path(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        "/v1/customers",
        "/v1/payment_intents",
        "/v1/payment_methods",
        "/v1/subscription_schedules",
        "/v1/checkout/sessions",
        "/v1/billing_portal/configurations",
        "/v1/webhook_endpoints",
        "/v1/messages/batches",
        "/v1/messages/count_tokens",
        "/v1/chat/completions",
        "/v1/fine_tuning/jobs",
        "/v1/embeddings",
        "/api/getUserPermissions",
        "/api/listCustomerPaymentMethods",
        "/v2/user_preferences",
        "/v1/organizations/usage_report",
        "/2010-04-01/Accounts",
        "/oauth/authorize",
    ],
)
def test_words_stay_words(path):
    assert template_path(path) == path
