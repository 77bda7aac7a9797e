"""The real openai SDK (3.x, on httpx2) through upstream_client against a loopback OpenAI."""

from __future__ import annotations

import httpx2
import openai
import pytest
import upstream_client.httpx2
from upstream_client import RetryPolicy

from tests.sdk import fakes
from tests.sdk.fakes import assert_no_secret, recording, rows, spooled_events  # noqa: F401

KEY = "sk-test-openai-Q2hlY2tNZVNlY3JldDEyMzQ1Njc4OTA"
pytestmark = pytest.mark.usefixtures("recording")
MESSAGES = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module")
def fake():
    running = fakes.OpenAI(KEY)
    yield running
    running.close()


@pytest.fixture(autouse=True)
def _fresh(fake):
    fake.reset()


def plain(fake, **options) -> openai.OpenAI:
    return openai.OpenAI(api_key=KEY, base_url=f"{fake.url}/v1", **options)


def captured(fake, retry: RetryPolicy | None = None, **options) -> openai.OpenAI:
    http = upstream_client.httpx2.Client(integration="openai", retry=retry)
    return openai.OpenAI(api_key=KEY, base_url=f"{fake.url}/v1", http_client=http, **options)


def scenario(client: openai.OpenAI, fake: fakes.OpenAI) -> list:
    """What an app does with the SDK; returns everything it got back."""
    out = []
    out.append(client.chat.completions.create(model="gpt-4o", messages=MESSAGES).model_dump())
    out.append([m.id for m in client.models.list()])
    out.append([f.id for f in client.files.list(limit=3)])  # three pages
    stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    out.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="gpt-4o", messages=[])
    out.append((bad.value.status_code, bad.value.body))
    fake.script(429)  # the SDK retries it by itself
    out.append(client.chat.completions.create(model="gpt-4o", messages=MESSAGES).id)
    wrong = openai.OpenAI(api_key="sk-wrong", base_url=client.base_url, http_client=client._client)
    with pytest.raises(openai.AuthenticationError) as denied:
        wrong.models.list()
    out.append((denied.value.status_code, denied.value.code))
    return out


def test_same_results_with_and_without_upstream_and_one_row_per_request(fake):
    expected = scenario(plain(fake), fake)
    sent_plain = len(fake.requests)
    fake.reset()
    got = scenario(captured(fake), fake)
    assert got == expected
    assert len(fake.requests) == sent_plain == 10
    found = rows("openai")
    assert len(found) == len(fake.requests)
    assert [r.status for r in found] == [200, 200, 200, 200, 200, 200, 400, 429, 200, 401]
    assert {r.path for r in found} == {"/v1/chat/completions", "/v1/models", "/v1/files"}
    assert found[0].api_version == "2020-10-01"
    assert_no_secret(KEY, found)


def test_sdk_retries_are_attempts_of_one_call(fake):
    fake.script(429, 503)
    client = captured(fake)
    assert [m.id for m in client.models.list()] == ["gpt-4o", "gpt-4o-mini"]
    found = rows("openai")
    assert [(r.status, r.attempt) for r in found] == [(429, 1), (503, 2), (200, 3)]
    assert len({r.call_id for r in found}) == 1
    assert all(r.backoff_ms > 0 for r in found[1:])


def test_both_retry_layers_send_at_most_three_requests(fake):
    fake.script(*[503] * 9)
    client = captured(fake, retry=RetryPolicy(max_attempts=3, backoff=0.01))
    with pytest.raises(openai.InternalServerError):
        client.models.list()  # the SDK's own default: 2 retries
    assert len(fake.requests) == 3
    found = rows("openai")
    assert [r.attempt for r in found] == [1, 2, 3]


def test_a_stream_the_provider_cuts_is_a_failure(fake):
    fake.stream_chunks, fake.cut_after = 40, 10
    outcomes = []
    for client in (plain(fake, max_retries=0), captured(fake, max_retries=0)):
        stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        with pytest.raises((httpx2.RemoteProtocolError, openai.APIConnectionError)) as cut:
            for _ in stream:
                pass
        outcomes.append(type(cut.value))
    assert outcomes[0] is outcomes[1]
    (row,) = rows("openai")
    assert row.status == 200 and row.streamed
    assert row.outcome != "ok"


def test_an_error_chunk_in_the_stream_is_a_failure(fake):
    fake.stream_chunks, fake.error_after = 20, 5
    client = captured(fake)
    stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
    (row,) = rows("openai")
    assert (row.status, row.outcome) == (200, "server_error")


def test_a_stream_the_caller_closes_early_is_not_a_failure(fake):
    fake.stream_chunks, fake.chunk_delay = 200, 0.002
    client = captured(fake)
    stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    for n, _ in enumerate(stream):
        if n == 3:
            break
    stream.close()
    (row,) = rows("openai")
    assert (row.status, row.outcome, row.streamed) == (200, "ok", True)


def test_the_key_reaches_neither_the_database_nor_the_spool_nor_the_logs(fake, tmp_path, caplog):
    from upstream_client.ship import Shipper

    caplog.set_level("DEBUG", "upstream_client")
    caplog.set_level("DEBUG", "monitoring")
    scenario(captured(fake), fake)
    assert_no_secret(KEY, rows("openai"), caplog)
    # The same calls shipped to an Upstream that is down end in the spool: no key there.
    down = Shipper("http://127.0.0.1:9", "up_Spool123_key", spool_dir=tmp_path, max_backoff=60)
    http = upstream_client.httpx2.Client(integration="openai", sink=down)
    fake.reset()
    scenario(openai.OpenAI(api_key=KEY, base_url=f"{fake.url}/v1", http_client=http), fake)
    down.flush(timeout=1)
    down.close(timeout=0.5)
    spooled = spooled_events(tmp_path)
    assert len(spooled) == 10
    assert_no_secret(KEY, spooled)
