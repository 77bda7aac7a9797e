"""The row builder's fast URL split gives exactly what urlsplit gives (host, port, path,
query), and userinfo never survives either way."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.attempts import _PLAIN_URL, _host_port

ANY = st.characters(min_codepoint=0, max_codepoint=0x7F) | st.sampled_from("é€\u3000")
# Mostly URLs the fast path takes: printable ASCII.
REST = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)


def _split(url: str) -> tuple:
    """What from_fields takes from a URL: through the fast path when it matches."""
    plain = _PLAIN_URL.fullmatch(url)
    if plain:
        scheme, netloc, path, query = plain.groups(default="")
    else:
        scheme, netloc, path, query, _ = urlsplit(url)
    return scheme, *_host_port(scheme, netloc), path, query


def _reference(url: str) -> tuple:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.scheme, parts.hostname or "", port, parts.path, parts.query


@settings(max_examples=1_500, deadline=None)
@given(
    st.sampled_from(["http", "https", "HTTPS", "ftp"]),
    st.sampled_from(["api.example.com", "API.Example.COM:8443", "u:p@h.io", "[::1]:80", "h:99999"])
    | st.text(ANY, max_size=12),
    REST | st.text(ANY, max_size=30),
)
def test_the_fast_split_agrees_with_urlsplit(scheme, netloc, rest):
    url = f"{scheme}://{netloc}{rest}"
    try:
        want = _reference(url)
    except ValueError:
        return  # urlsplit refuses it; from_fields then raises as before
    assert _split(url) == want


@pytest.mark.parametrize(
    "url",
    [
        "https://api.stripe.com/v1/customers/cus_1?expand[]=x&limit=3#frag",
        "https://api.stripe.com",
        "https://api.stripe.com?x=1",
        "https://api.stripe.com:8443/v1/x?a=b?c",
        "https://user:pw@api.stripe.com/v1/x",
        "https://api.stripe.com/v1/x\t?y=1",
        " https://api.stripe.com/v1/x",
    ],
)
def test_known_shapes_agree(url):
    assert _split(url) == _reference(url)
    assert "user" not in _split(url)[1] and "pw" not in _split(url)[1]


def test_ordinary_urls_take_the_fast_path():
    assert _PLAIN_URL.fullmatch("https://api.stripe.com/v1/customers/cus_1?expand[]=x&limit=3")
    assert not _PLAIN_URL.fullmatch("https://user:pw@api.stripe.com/v1/x")
