"""Refuse probe URLs that would reach loopback, private, link-local or other non-public hosts.

How the probe runner uses it:

1. ``addresses = check_url(url, allow_hosts=...)`` before the request. ``BlockedDestination``
   means "never send this" (report it as the ``blocked`` failure); ``UnresolvableHost`` means
   DNS gave no answer, which is an ordinary ``connect`` failure, not an attack.
2. Follow redirects by hand (at most 5): for each ``Location``,
   ``next_url, addresses = check_redirect(location, current_url, allow_hosts=...)`` and
   request exactly ``next_url``.
3. DNS can answer differently a moment later (rebinding). A runner that cares connects to
   one of the checked ``addresses``, or checks the connected peer with ``is_public_address``.

Every address a name resolves to is checked; one non-public address blocks the URL. IP
literals are judged without DNS, including the forms ``inet_aton`` accepts and HTTP clients
pass straight to it (``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``), IPv4-mapped
IPv6 (``::ffff:127.0.0.1``) and IPv6 that embeds IPv4 (NAT64 ``64:ff9b::/96``, 6to4).

``allow_hosts`` entries are ``host`` or ``host:port`` (``[::1]:8000`` for IPv6), compared
case-insensitively with the URL's host as written; an allowed host skips the address check
(it is still resolved, so the runner gets addresses). The port of ``host:port`` is the URL's
effective port, so ``api.local:443`` allows ``https://api.local/``.

Hosts must be ASCII (letters, digits, ``-``, ``.``, ``_``) or an IP literal: an IDN host is
refused rather than encoded, because IDNA 2003 and 2008 can map one name to two different
domains and the check must resolve the name the client will connect to.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urljoin, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_CHARS = re.compile(r"[a-z0-9._-]+")
# Only strings made of these can be IPv4 in inet_aton's eyes; anything else is a name.
_INET_ATON_CHARS = re.compile(r"[0-9a-fx.]+")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_RFC1918 = tuple(
    ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)
_UNIQUE_LOCAL = ipaddress.IPv6Network("fc00::/7")
_METADATA = ipaddress.IPv4Address("169.254.169.254")


class BlockedDestination(ValueError):
    """The URL must not be requested: bad scheme, no host, or a non-public address."""


class UnresolvableHost(ValueError):
    """The host has no address (DNS failure); a connect failure, not a blocked one."""


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def _non_public_kind(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public address (e.g. "loopback"), or None if it is public."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            kind = _non_public_kind(inner)
            return f"{kind} (embedded {inner})" if kind else None
        if ip.is_site_local:
            return "site-local"
    if ip.is_unspecified or ip in _THIS_NETWORK:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip == _METADATA:
        return "link-local (cloud metadata)"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip in _CGNAT:
        return "shared (CGNAT)"
    if any(ip in net for net in _RFC1918) or ip in _UNIQUE_LOCAL:
        return "private"
    # ipaddress's own lists cover the rest: documentation, benchmarking, 240/4, broadcast …
    if ip.is_private or ip.is_reserved or not ip.is_global:
        return "reserved"
    return None


def is_public_address(ip: str | IPAddress) -> bool:
    """True if ``ip`` is a globally routable unicast address a probe may connect to."""
    if isinstance(ip, str):
        try:
            ip = ipaddress.ip_address(ip)
        except ValueError:
            return False
    return _non_public_kind(ip) is None


def _parse_ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _INET_ATON_CHARS.fullmatch(host) and host.count(".") <= 3:
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _allowed(host: str, port: int, allow_hosts: Iterable[str]) -> bool:
    # "example.com." and "example.com" name the same host; compare without the root dot.
    host = host.removesuffix(".")
    netloc_host = f"[{host}]" if ":" in host else host
    wanted = {host, f"{netloc_host}:{port}"}
    if isinstance(allow_hosts, str):  # one host passed bare would otherwise be its letters
        allow_hosts = (allow_hosts,)
    for entry in allow_hosts:
        entry = entry.strip().lower()
        if entry.startswith("[") and entry.endswith("]"):
            entry = entry[1:-1]
        if entry.removesuffix(".") in wanted:
            return True
    return False


Resolver = Callable[..., list[tuple[Any, ...]]]


def _resolve(host: str, port: int, resolve: Resolver) -> list[IPAddress]:
    try:
        infos = resolve(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as exc:
        raise UnresolvableHost(f"cannot resolve host {host!r}: {exc}") from None
    addresses: list[IPAddress] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        # getaddrinfo may append "%scope" to link-local IPv6; ip_address understands it.
        try:
            ip = ipaddress.ip_address(sockaddr[0])
        except ValueError:
            continue
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise UnresolvableHost(f"cannot resolve host {host!r}: no IPv4 or IPv6 address")
    return addresses


def check_url(
    url: str,
    *,
    allow_hosts: Iterable[str] = (),
    resolve: Resolver = socket.getaddrinfo,
) -> list[IPAddress]:
    """Return the addresses ``url`` reaches, or raise if it must not be requested.

    Raises ``BlockedDestination`` for a non-http(s) scheme, a missing or malformed host or
    port, or any non-public address (unless the host is in ``allow_hosts``), and
    ``UnresolvableHost`` when the name does not resolve. ``resolve`` has
    ``socket.getaddrinfo``'s signature; tests pass a fake.
    """
    if not isinstance(url, str):
        raise BlockedDestination("URL must be text")
    if _CONTROL_CHARS.search(url):
        raise BlockedDestination("URL contains control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise BlockedDestination(f"malformed URL: {exc}") from None

    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise BlockedDestination(f"scheme {scheme or '(none)'!r} is not allowed; use http or https")
    if not host:
        raise BlockedDestination("URL has no host")
    if port is None:
        port = _DEFAULT_PORTS[scheme]

    literal = _parse_ip_literal(host.removesuffix("."))
    if literal is None and not _HOST_CHARS.fullmatch(host):
        raise BlockedDestination(
            f"host {host!r} has characters a hostname cannot have "
            "(internationalised names must be given in their xn-- form)"
        )
    allowed = _allowed(host, port, allow_hosts)

    addresses = [literal] if literal is not None else _resolve(host, port, resolve)
    if not allowed:
        verb = "is" if literal is not None else "resolves to"
        for ip in addresses:
            kind = _non_public_kind(ip)
            if kind:
                raise BlockedDestination(f"host {host!r} {verb} {ip}, a {kind} address")
    return addresses


def check_redirect(
    location: str,
    base_url: str,
    allow_hosts: Iterable[str] = (),
    *,
    resolve: Resolver = socket.getaddrinfo,
) -> tuple[str, list[IPAddress]]:
    """Resolve a redirect's ``Location`` against ``base_url`` and check it like ``check_url``.

    Returns the absolute URL (request exactly that) and its addresses.
    """
    if not isinstance(location, str) or _CONTROL_CHARS.search(location):
        raise BlockedDestination("redirect Location is malformed")
    try:
        target = urljoin(base_url, location.strip())
    except ValueError as exc:
        raise BlockedDestination(f"malformed redirect: {exc}") from None
    return target, check_url(target, allow_hosts=allow_hosts, resolve=resolve)
