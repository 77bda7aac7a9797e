"""The real anthropic SDK (2.x, on httpx2) through upstream_client against a loopback Anthropic."""

from __future__ import annotations

import anthropic
import httpx2
import pytest
import upstream_client.httpx2
from upstream_client import RetryPolicy

from tests.sdk import fakes
from tests.sdk.fakes import assert_no_secret, recording, rows, spooled_events  # noqa: F401

KEY = "sk-ant-api03-RmFrZUFudGhyb3BpY0tleUZvclRlc3RzMTIz-AA"
MODEL = "claude-fake-0"
MESSAGES = [{"role": "user", "content": "Say hello"}]
pytestmark = pytest.mark.usefixtures("recording")


@pytest.fixture(scope="module")
def fake():
    running = fakes.Anthropic(KEY)
    yield running
    running.close()


@pytest.fixture(autouse=True)
def _fresh(fake):
    fake.reset()


def plain(fake, **options) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=KEY, base_url=fake.url, **options)


def captured(fake, retry: RetryPolicy | None = None, **options) -> anthropic.Anthropic:
    http = upstream_client.httpx2.Client(integration="anthropic", retry=retry)
    return anthropic.Anthropic(api_key=KEY, base_url=fake.url, http_client=http, **options)


def scenario(client: anthropic.Anthropic, fake: fakes.Anthropic) -> list:
    """What an app does with the SDK; returns everything it got back."""
    out = []
    message = client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    out.append(message.model_dump())
    with client.messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES) as stream:
        out.append("".join(stream.text_stream))
        out.append(stream.get_final_message().usage.output_tokens)
    out.append([m.id for m in client.models.list(limit=2)])  # three pages
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model=MODEL, max_tokens=64, messages=[])
    out.append((bad.value.status_code, bad.value.body))
    fake.script(529)  # overloaded: the SDK retries it by itself
    out.append(client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES).id)
    wrong = anthropic.Anthropic(
        api_key="sk-ant-wrong", base_url=fake.url, http_client=client._client
    )
    with pytest.raises(anthropic.AuthenticationError) as denied:
        wrong.models.list()
    out.append((denied.value.status_code, denied.value.body["error"]["type"]))
    return out


def test_same_results_with_and_without_upstream_and_one_row_per_request(fake):
    expected = scenario(plain(fake), fake)
    sent_plain = len(fake.requests)
    fake.reset()
    got = scenario(captured(fake), fake)
    assert got == expected
    assert len(fake.requests) == sent_plain == 9
    found = rows("anthropic")
    assert len(found) == len(fake.requests)
    assert [r.status for r in found] == [200, 200, 200, 200, 200, 400, 529, 200, 401]
    assert {r.path for r in found} == {"/v1/messages", "/v1/models"}
    assert_no_secret(KEY, found)


def test_sdk_retries_are_attempts_of_one_call(fake):
    fake.script(429, 529)
    client = captured(fake)
    assert client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES).content
    found = rows("anthropic")
    assert [(r.status, r.attempt) for r in found] == [(429, 1), (529, 2), (200, 3)]
    assert len({r.call_id for r in found}) == 1
    assert all(r.backoff_ms > 0 for r in found[1:])
    assert found[0].error_code == "rate_limit_error"


def test_both_retry_layers_send_at_most_three_requests(fake):
    fake.script(*[529] * 9)
    client = captured(fake, retry=RetryPolicy(max_attempts=3, backoff=0.01))
    with pytest.raises(anthropic.InternalServerError):
        client.models.list()
    assert len(fake.requests) == 3
    assert [r.attempt for r in rows("anthropic")] == [1, 2, 3]


def test_a_stream_the_provider_cuts_is_a_failure(fake):
    fake.stream_chunks, fake.cut_after = 40, 10
    outcomes = []
    for client in (plain(fake, max_retries=0), captured(fake, max_retries=0)):
        broken = (httpx2.RemoteProtocolError, anthropic.APIConnectionError)
        stream = client.messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES)
        with pytest.raises(broken) as cut, stream as s:
            for _ in s.text_stream:
                pass
        outcomes.append(type(cut.value))
    assert outcomes[0] is outcomes[1]
    (row,) = rows("anthropic")
    assert row.status == 200 and row.streamed and row.outcome != "ok"


def test_an_error_event_in_the_stream_is_a_failure(fake):
    fake.stream_chunks, fake.error_after = 20, 6
    client = captured(fake)
    stream = client.messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES)
    with pytest.raises(anthropic.APIStatusError) as failed, stream as s:
        for _ in s.text_stream:
            pass
    assert failed.value.body["error"]["type"] == "overloaded_error"
    (row,) = rows("anthropic")
    assert (row.status, row.outcome, row.error_code) == (200, "server_error", "overloaded_error")


def test_a_stream_the_caller_closes_early_is_not_a_failure(fake):
    fake.stream_chunks, fake.chunk_delay = 200, 0.002
    client = captured(fake)
    with client.messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES) as stream:
        for n, _ in enumerate(stream.text_stream):
            if n == 3:
                break
    (row,) = rows("anthropic")
    assert (row.status, row.outcome, row.streamed) == (200, "ok", True)


def test_the_key_reaches_neither_the_database_nor_the_spool_nor_the_logs(fake, tmp_path, caplog):
    from upstream_client.ship import Shipper

    caplog.set_level("DEBUG", "upstream_client")
    caplog.set_level("DEBUG", "monitoring")
    scenario(captured(fake), fake)
    assert_no_secret(KEY, rows("anthropic"), caplog)
    down = Shipper("http://127.0.0.1:9", "up_Spool123_key", spool_dir=tmp_path, max_backoff=60)
    http = upstream_client.httpx2.Client(integration="anthropic", sink=down)
    fake.reset()
    scenario(anthropic.Anthropic(api_key=KEY, base_url=fake.url, http_client=http), fake)
    down.flush(timeout=1)
    down.close(timeout=0.5)
    spooled = spooled_events(tmp_path)
    assert len(spooled) == 9
    assert_no_secret(KEY, spooled)
