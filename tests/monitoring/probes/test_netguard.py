"""Tests for the SSRF guard that vets probe URLs and redirects before any request."""

from __future__ import annotations

import ipaddress
import socket

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitoring.probes.netguard import (
    BlockedDestination,
    UnresolvableHost,
    check_redirect,
    check_url,
    is_public_address,
)

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"


def no_dns(host, port, *args, **kwargs):
    raise AssertionError(f"{host!r} should not need DNS")


def failing_dns(host, port, *args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def fake_dns(table: dict[str, list[str]]):
    """A getaddrinfo stand-in answering from ``table`` and failing for anything else."""
    calls = []

    def resolve(host, port, family=0, type=0, proto=0, flags=0):
        calls.append((host, port, type))
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out = []
        for addr in table[host]:
            if ":" in addr:
                out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (addr, port, 0, 0)))
            else:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (addr, port)))
        return out

    resolve.calls = calls
    return resolve


# --- IP literals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local (cloud metadata)"),
        ("169.254.10.1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("100.127.255.254", "shared (CGNAT)"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.10", "reserved"),
        ("[::1]", "loopback"),
        ("[::]", "unspecified"),
        ("[fc00::1]", "private"),
        ("[fd12:3456::1]", "private"),
        ("[fd00:ec2::254]", "private"),
        ("[fe80::1]", "link-local"),
        ("[fe80::1%25eth0]", "link-local"),
        ("[fec0::1]", "site-local"),
        ("[ff02::1]", "multicast"),
        ("[::ffff:127.0.0.1]", "loopback (embedded 127.0.0.1)"),
        ("[::ffff:7f00:1]", "loopback (embedded 127.0.0.1)"),
        ("[::ffff:169.254.169.254]", "link-local (cloud metadata) (embedded 169.254.169.254)"),
        ("[::ffff:10.0.0.1]", "private (embedded 10.0.0.1)"),
        ("[64:ff9b::10.0.0.1]", "private (embedded 10.0.0.1)"),
        ("[2002:a00:1::]", "private (embedded 10.0.0.1)"),
        ("[::127.0.0.1]", "reserved"),
        ("[2001:db8::1]", "reserved"),
    ],
)
def test_non_public_ip_literals_are_blocked_without_dns(host, kind):
    with pytest.raises(BlockedDestination) as caught:
        check_url(f"http://{host}:8080/path", resolve=no_dns)
    message = str(caught.value)
    assert message.endswith(f"a {kind} address")
    assert "is " in message


def test_the_message_names_host_and_address():
    with pytest.raises(BlockedDestination, match=r"host '0x7f\.1' is 127\.0\.0\.1, a loopback"):
        check_url("http://0x7f.1/", resolve=no_dns)


@pytest.mark.parametrize(
    "host",
    [
        "2130706433",  # decimal
        "0177.0.0.1",  # octal
        "0x7f.1",  # hex, short form
        "0x7F000001",
        "0x7f.0.0.1",
        "017700000001",
        "127.1",
        "127.0.1",
        "0177.0x0.0.01",
        "127.0.0.1.",  # root dot
        "LOCALHOST.",
    ],
)
def test_odd_encodings_of_loopback_are_blocked(host):
    resolve = fake_dns({"localhost.": ["127.0.0.1"]})
    with pytest.raises(BlockedDestination, match=r"127\.0\.0\.1, a loopback"):
        check_url(f"http://{host}/", resolve=resolve)


def test_encodings_follow_inet_aton_so_a_leading_zero_means_octal():
    # 0127 is octal 87: that is where the OS would connect, so that is what is judged.
    assert check_url("http://0127.0.0.1/", resolve=no_dns) == [ipaddress.ip_address("87.0.0.1")]


private_v4 = st.sampled_from(["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8"]).map(
    ipaddress.IPv4Network
)


def _encode(value: int, style: str) -> str:
    octets = value.to_bytes(4, "big")
    if style == "decimal":
        return str(value)
    if style == "hex":
        return hex(value)
    if style == "octal-octets":
        return ".".join(f"0{b:o}" for b in octets)
    if style == "hex-octets":
        return ".".join(hex(b) for b in octets)
    if style == "a.bcd":  # first octet, then the other 24 bits as one number
        return f"{octets[0]}.{value & 0xFFFFFF}"
    if style == "mapped":
        return f"[::ffff:{ipaddress.IPv4Address(value)}]"
    return str(ipaddress.IPv4Address(value))


@given(
    private_v4,
    st.integers(0, 2**24 - 1),
    st.sampled_from(["dotted", "decimal", "hex", "octal-octets", "hex-octets", "a.bcd", "mapped"]),
)
def test_every_encoding_of_a_private_address_is_blocked(network, offset, style):
    value = int(network.network_address) + offset % network.num_addresses
    with pytest.raises(BlockedDestination):
        check_url(f"https://{_encode(value, style)}/", resolve=no_dns)


def test_a_public_literal_is_allowed_without_dns():
    assert check_url(f"https://{PUBLIC_V4}/health", resolve=no_dns) == [
        ipaddress.IPv4Address(PUBLIC_V4)
    ]
    assert check_url(f"http://[{PUBLIC_V6}]:8443/", resolve=no_dns) == [
        ipaddress.IPv6Address(PUBLIC_V6)
    ]
    assert check_url(f"http://[::ffff:{PUBLIC_V4}]/", resolve=no_dns) == [
        ipaddress.ip_address(f"::ffff:{PUBLIC_V4}")
    ]


# --- names ------------------------------------------------------------------------------------


def test_a_name_resolving_to_a_private_address_is_blocked():
    resolve = fake_dns({"internal.example.com": ["10.0.0.7"]})
    with pytest.raises(
        BlockedDestination,
        match=r"host 'internal\.example\.com' resolves to 10\.0\.0\.7, a private address",
    ):
        check_url("https://Internal.Example.com/api", resolve=resolve)
    assert resolve.calls == [("internal.example.com", 443, socket.SOCK_STREAM)]


def test_one_private_address_among_public_ones_blocks():
    resolve = fake_dns({"mixed.example.com": [PUBLIC_V4, PUBLIC_V6, "fd00::5"]})
    with pytest.raises(BlockedDestination, match=r"fd00::5, a private address"):
        check_url("http://mixed.example.com/", resolve=resolve)


def test_a_public_name_returns_all_its_addresses_once():
    resolve = fake_dns({"api.example.com": [PUBLIC_V4, PUBLIC_V6, PUBLIC_V4]})
    assert check_url("https://api.example.com:8443/v1", resolve=resolve) == [
        ipaddress.ip_address(PUBLIC_V4),
        ipaddress.ip_address(PUBLIC_V6),
    ]
    assert resolve.calls[0][1] == 8443


def test_localhost_really_resolves_and_is_blocked():
    with pytest.raises(BlockedDestination, match=r"host 'localhost' resolves to .*loopback"):
        check_url("http://localhost:8000/")


def test_an_unresolvable_name_is_not_reported_as_blocked():
    with pytest.raises(UnresolvableHost, match=r"cannot resolve host 'nx\.example\.com'") as c:
        check_url("https://nx.example.com/", resolve=failing_dns)
    assert isinstance(c.value, ValueError)
    assert not isinstance(c.value, BlockedDestination)


def test_a_resolver_with_no_ip_answers_is_unresolvable():
    with pytest.raises(UnresolvableHost, match="no IPv4 or IPv6 address"):
        check_url("https://empty.example.com/", resolve=lambda *a, **k: [])


def test_a_resolver_error_from_an_overlong_label_is_unresolvable():
    # The real getaddrinfo raises UnicodeError for a label over 63 characters.
    with pytest.raises(UnresolvableHost):
        check_url(f"http://{'a' * 64}.example.com/")


# --- allow list -------------------------------------------------------------------------------


def test_an_allowed_host_may_be_private_and_still_gets_addresses():
    addresses = check_url("http://localhost:8000/", allow_hosts=["localhost"])
    assert addresses
    assert all(ip.is_loopback for ip in addresses)


def test_the_allow_list_is_case_insensitive():
    resolve = fake_dns({"api.internal": ["10.1.1.1"]})
    assert check_url("http://API.Internal/", allow_hosts=[" Api.INTERNAL "], resolve=resolve)


def test_an_allow_list_entry_with_a_port_allows_only_that_port():
    allow = ["127.0.0.1:8000"]
    assert check_url("http://127.0.0.1:8000/", allow_hosts=allow, resolve=no_dns)
    with pytest.raises(BlockedDestination):
        check_url("http://127.0.0.1:8001/", allow_hosts=allow, resolve=no_dns)
    with pytest.raises(BlockedDestination):
        check_url("http://127.0.0.1/", allow_hosts=allow, resolve=no_dns)


def test_an_allow_list_port_is_compared_with_the_default_port():
    resolve = fake_dns({"api.local": ["10.0.0.2"]})
    assert check_url("https://api.local/", allow_hosts=["api.local:443"], resolve=resolve)
    with pytest.raises(BlockedDestination):
        check_url("http://api.local/", allow_hosts=["api.local:443"], resolve=resolve)


def test_ipv6_allow_list_entries_take_brackets_or_not():
    assert check_url("http://[::1]:9000/", allow_hosts=["[::1]:9000"], resolve=no_dns)
    assert check_url("http://[::1]:9000/", allow_hosts=["::1"], resolve=no_dns)
    assert check_url("http://[::1]:9000/", allow_hosts=["[::1]"], resolve=no_dns)


def test_a_single_allowed_host_may_be_passed_as_a_string():
    assert check_url("http://[::1]:9000/", allow_hosts="[::1]:9000", resolve=no_dns)
    with pytest.raises(BlockedDestination):
        check_url("http://1/", allow_hosts="1:8", resolve=no_dns)  # not the letter "1"


def test_the_allow_list_matches_the_host_as_written_not_other_encodings():
    with pytest.raises(BlockedDestination):
        check_url("http://2130706433/", allow_hosts=["127.0.0.1"], resolve=no_dns)


def test_a_root_dot_does_not_dodge_the_allow_list():
    resolve = fake_dns({"api.local.": ["10.0.0.2"]})
    assert check_url("http://api.local./", allow_hosts=["api.local"], resolve=resolve)


# --- schemes and malformed URLs ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "scheme 'file' is not allowed"),
        ("gopher://127.0.0.1:70/_x", "scheme 'gopher' is not allowed"),
        ("ftp://example.com/", "scheme 'ftp' is not allowed"),
        ("javascript:alert(1)", "scheme 'javascript' is not allowed"),
        ("//example.com/", "scheme '\\(none\\)' is not allowed"),
        ("example.com", "scheme '\\(none\\)' is not allowed"),
        ("http:///path", "no host"),
        ("http:example.com", "no host"),
        ("https://user@:443/", "no host"),
        ("http://[::1/", "malformed URL"),
        ("http://example.com:99999/", "malformed URL"),
        ("http://example.com:80:80/", "malformed URL"),
        ("http://exa\nmple.com/", "control characters"),
        ("http://example.com\t/", "control characters"),
        ("http://faß.de/", "xn-- form"),
        ("http://%31%32%37.0.0.1/", "characters a hostname cannot have"),
        ("http://ex ample.com/", "characters a hostname cannot have"),
    ],
)
def test_urls_that_are_not_plain_http_to_a_host_are_blocked(url, message):
    with pytest.raises(BlockedDestination, match=message):
        check_url(url, resolve=no_dns)


def test_scheme_case_does_not_matter():
    assert check_url(f"HTTPS://{PUBLIC_V4}/", resolve=no_dns)


def test_userinfo_cannot_disguise_the_real_host():
    with pytest.raises(BlockedDestination, match=r"127\.0\.0\.1"):
        check_url(f"http://{PUBLIC_V4}@127.0.0.1/", resolve=no_dns)
    with pytest.raises(BlockedDestination, match=r"127\.0\.0\.1"):
        check_url(f"http://{PUBLIC_V4}\\@127.0.0.1/", resolve=no_dns)
    assert check_url(f"http://127.0.0.1:80@{PUBLIC_V4}/", resolve=no_dns)


# --- redirects --------------------------------------------------------------------------------


def test_a_redirect_to_loopback_is_blocked():
    with pytest.raises(BlockedDestination, match="loopback"):
        check_redirect("http://127.0.0.1/", f"https://{PUBLIC_V4}/start", resolve=no_dns)


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/next?x=1", f"https://{PUBLIC_V4}/next?x=1"),
        ("c", f"https://{PUBLIC_V4}/a/c"),
        ("../up", f"https://{PUBLIC_V4}/up"),
        ("?page=2", f"https://{PUBLIC_V4}/a/b?page=2"),
        ("", f"https://{PUBLIC_V4}/a/b"),
        (f"  http://{PUBLIC_V4}:81/  ", f"http://{PUBLIC_V4}:81/"),
    ],
)
def test_a_relative_redirect_is_resolved_against_the_base(location, expected):
    url, addresses = check_redirect(location, f"https://{PUBLIC_V4}/a/b", resolve=no_dns)
    assert url == expected
    assert addresses == [ipaddress.ip_address(PUBLIC_V4)]


def test_a_scheme_relative_redirect_to_a_private_host_is_blocked():
    with pytest.raises(BlockedDestination, match=r"10\.0\.0\.1"):
        check_redirect("//10.0.0.1/admin", f"https://{PUBLIC_V4}/", resolve=no_dns)


def test_a_redirect_to_another_scheme_is_blocked():
    with pytest.raises(BlockedDestination, match="scheme 'file'"):
        check_redirect("file:///etc/passwd", f"https://{PUBLIC_V4}/", resolve=no_dns)


def test_a_relative_redirect_on_an_allowed_host_stays_allowed():
    url, _ = check_redirect(
        "/next", "http://127.0.0.1:8000/first", allow_hosts=["127.0.0.1:8000"], resolve=no_dns
    )
    assert url == "http://127.0.0.1:8000/next"


def test_a_redirect_location_with_control_characters_is_blocked():
    with pytest.raises(BlockedDestination):
        check_redirect("/x\r\nSet-Cookie: a=b", f"https://{PUBLIC_V4}/", resolve=no_dns)


# --- is_public_address ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "public"),
    [
        (PUBLIC_V4, True),
        (PUBLIC_V6, True),
        ("8.8.8.8", True),
        (f"::ffff:{PUBLIC_V4}", True),
        ("64:ff9b::8.8.8.8", True),
        ("127.0.0.1", False),
        ("169.254.169.254", False),
        ("::1", False),
        ("64:ff9b:1::1", False),
        ("not an ip", False),
        ("", False),
    ],
)
def test_is_public_address(ip, public):
    assert is_public_address(ip) is public
    if ip and ip != "not an ip":
        assert is_public_address(ipaddress.ip_address(ip)) is public


# --- properties -------------------------------------------------------------------------------


def _only_guard_errors(url: str) -> None:
    try:
        addresses = check_url(url, resolve=failing_dns)
    except (BlockedDestination, UnresolvableHost):
        return
    # Without DNS only a public IP literal can pass.
    assert addresses
    assert all(is_public_address(ip) for ip in addresses)


@given(st.text())
def test_arbitrary_text_raises_only_guard_errors(text):
    _only_guard_errors(text)


url_pieces = st.sampled_from(
    [
        *("http://", "https://", "HTTP://", "[", "]", "::", "@", ":", "/", "\\", "%", "#"),
        *("?", ".", "0x", "7f", "127", "0", "1", "ffff", "localhost", "example.com", "ß"),
        *(" ", "\x00"),
    ]
)


@given(st.lists(url_pieces, max_size=12).map("".join))
def test_url_shaped_text_raises_only_guard_errors(text):
    _only_guard_errors(text)


hosts = st.sampled_from(["public.example", "private.example", "127.0.0.1", PUBLIC_V4, "[::1]"])
userinfo = st.sampled_from(["", "user@", "user:pw@", f"{PUBLIC_V4}@", "a@b@", "x\\@", ":@"])
tails = st.sampled_from(["", "/", "/p?q=1", "#frag", "\\@127.0.0.1/", "?@127.0.0.1", ":8080/"])


@given(st.sampled_from(["http://", "https://"]), userinfo, hosts, tails)
def test_httpx_connects_to_the_host_that_was_checked(scheme, user, host, tail):
    """Parser differentials are the classic SSRF bypass: httpx must agree on the host."""
    url = scheme + user + host + tail
    resolve = fake_dns({"public.example": [PUBLIC_V4], "private.example": ["10.9.9.9"]})
    try:
        check_url(url, resolve=resolve)
    except (BlockedDestination, UnresolvableHost):
        return
    try:
        client_host = httpx.URL(url).host
    except httpx.InvalidURL:
        return  # httpx refuses it, so nothing is sent
    assert client_host in ("public.example", PUBLIC_V4)
