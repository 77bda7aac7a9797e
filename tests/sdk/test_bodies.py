"""Batch sizes and success-body samples read on the caller's side."""

from __future__ import annotations

import json

import pytest
from upstream_client.bodies import BATCH_BODY_MAX, SAMPLE_BODY_MAX, batch_items, success_sample


def paubox_bulk(n: int) -> bytes:
    messages = [
        {"recipients": [f"r{i}@example.com"], "content": {"text/plain": "hi"}} for i in range(n)
    ]
    return json.dumps({"data": {"messages": messages}}).encode()


def test_it_counts_a_paubox_bulk_batch():
    assert batch_items("POST", "/v1/acme/bulk_messages", "application/json", paubox_bulk(60)) == 60
    assert batch_items("post", "/v1/acme/bulk_messages/", None, paubox_bulk(10)) == 10


@pytest.mark.parametrize(
    ("body", "count"),
    [
        (b"[1, 2, 3]", 3),
        (b'{"messages": [{}, {}]}', 2),
        (b'{"requests": [{"custom_id": "a"}]}', 1),
        (b'{"data": [1, 2, 3, 4]}', 4),
        (b'{"data": {"messages": []}}', 0),
    ],
)
def test_it_counts_the_common_batch_shapes(body, count):
    assert (
        batch_items("POST", "/v1/messages/batches", "application/json; charset=utf-8", body)
        == count
    )


@pytest.mark.parametrize(
    ("method", "path", "content_type", "body"),
    [
        ("GET", "/bulk_messages", "application/json", b"[1]"),
        ("PUT", "/bulk_messages", "application/json", b"[1]"),
        ("POST", "/messages", "application/json", b"[1, 2]"),
        ("POST", "/bulk_messages/abc", "application/json", b"[1, 2]"),  # last segment only
        ("POST", "/bulk_messages", "application/x-www-form-urlencoded", b"[1]"),
        ("POST", "/bulk_messages", "application/json", None),
        ("POST", "/bulk_messages", "application/json", b""),
        ("POST", "/bulk_messages", "application/json", b"{not json"),
        ("POST", "/bulk_messages", "application/json", b'{"items": [1]}'),
        ("POST", "/bulk_messages", "application/json", b'"a string"'),
        ("POST", "/bulk_messages", "application/json", b"\xff\xfe\x00garbage"),
        ("POST", "/bulk_messages", "application/json", "[1, 2]"),  # not bytes
        ("POST", None, "application/json", b"[1]"),
    ],
)
def test_it_returns_none_for_anything_else(method, path, content_type, body):
    assert batch_items(method, path, content_type, body) is None


def test_it_leaves_a_body_over_a_megabyte_unread():
    body = b"[" + b"1," * (BATCH_BODY_MAX // 2) + b"1]"
    assert len(body) > BATCH_BODY_MAX
    assert batch_items("POST", "/bulk", "application/json", body) is None


def test_it_never_raises_on_deep_json():
    body = b"[" * 100_000 + b"]" * 100_000
    assert batch_items("POST", "/batch", "application/json", body[:BATCH_BODY_MAX]) is None


def test_it_samples_a_small_json_success_body():
    assert success_sample("application/json", b'{"error": "User not found"}') == (
        '{"error":"User not found"}'
    )
    assert success_sample(None, b' [{"ok": true}]') == '[{"ok":true}]'


def test_it_scrubs_secrets_from_the_sample():
    canary = "sk_live_CANARY4242424242424242"
    body = json.dumps({"ok": True, "api_key": "hunter2", "note": f"use {canary}"}).encode()
    sample = success_sample("application/json", body)
    assert "hunter2" not in sample
    assert canary not in sample
    assert json.loads(sample) == {"ok": True, "api_key": "[redacted]", "note": "use [redacted]"}


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("text/html", b"<html>{}</html>"),
        ("text/plain", b'{"error": "x"}'),
        ("application/json", b""),
        ("application/json", b"true"),
        (None, b"plain words"),
        ("application/json", None),
        ("application/json", "{}"),
    ],
)
def test_it_samples_only_json_objects_and_arrays(content_type, data):
    assert success_sample(content_type, data) is None


def test_it_does_not_sample_big_bodies():
    data = json.dumps({"users": ["x" * 100] * 50}).encode()
    assert len(data) > SAMPLE_BODY_MAX
    assert success_sample("application/json", data) is None
    small = data[: SAMPLE_BODY_MAX - 10]
    assert success_sample("application/json", small) is not None  # truncated JSON, text-scrubbed
