"""Refusing webhook targets inside private networks (SSRF).

Two checks, because either alone can be bypassed:
- when a URL is registered: every address its host resolves to must be public;
- when a connection is opened: the address actually dialled must be public. This is the one
  that counts — DNS can answer differently a second later (rebinding), and a literal IP is
  never looked up — so it is the delivery client's guard, which sees every address it dials.

"Public" is Python's `is_global`, minus multicast, with IPv4 hidden inside IPv6 (mapped, NAT64,
6to4, Teredo) judged by the IPv4 address. Loopback, RFC 1918, link-local (and with it the cloud
metadata address 169.254.169.254), CGNAT, unspecified, reserved and documentation ranges all
fail it. For IPv6, `is_global` is not enough: it passes IPv4-compatible `::a.b.c.d` (`::/96`),
SIIT `::ffff:0:a.b.c.d`, site-local `fec0::/10` and other reserved space that no public host
uses, several of which stacks route to IPv4 or to the local site. So an IPv6 address is public
only inside global unicast, `2000::/3`, the only space IANA allocates to the Internet.

`check_literal` is the one home of the rule for what a URL's host says on its own, with no DNS
lookup: both a job's `callback_url` at intake and an endpoint's URL at registration go
through it (the latter then resolves the name too).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
# Inside 2000::/3 but not on the Internet, and newer than Python 3.11's tables.
_DOCUMENTATION_V6 = ipaddress.IPv6Network("3fff::/20")  # RFC 9637
# Names every resolver answers from its hosts file with a loopback address (no DNS asked).
_LOOPBACK_NAMES = frozenset(
    {
        "localhost",
        "localhost.localdomain",
        "localhost6",
        "localhost6.localdomain6",
        "ip6-localhost",
        "ip6-loopback",
    }
)


class RefusedAddress(OSError):
    def __init__(self, address: str) -> None:
        super().__init__(errno.EACCES, f"refused non-public address {address}")
        self.address = address


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64 or ip in _NAT64_LOCAL:
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def is_public(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return is_public(embedded)
        if ip.scope_id:
            return False
        if ip not in _GLOBAL_UNICAST or ip in _DOCUMENTATION_V6:
            return False
    return ip.is_global and not ip.is_multicast


def parse_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def check_url(url: str) -> None:
    """Raises RefusedAddress unless every address of the URL's host is public.

    Raises OSError (socket.gaierror) when the name does not resolve."""
    check_literal(url)
    host = urlsplit(url).hostname or ""
    if _literal_address(_bare_host(url)) is not None:
        return
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    for info in infos:
        address = str(info[4][0])
        ip = parse_ip(address)
        if ip is None or not is_public(ip):
            raise RefusedAddress(address)


def _bare_host(url: str) -> str:
    # `LOCALHOST.` is `localhost`: a trailing dot only says the name is fully qualified.
    return (urlsplit(url).hostname or "").lower().rstrip(".")


def _literal_address(host: str) -> IPAddress | None:
    """The address a host names without any lookup: an IP literal, or one of the legacy IPv4
    forms (`2130706433`, `0x7f.1`, `127.1`) that getaddrinfo takes as a number, not a name."""
    literal = parse_ip(host)
    if literal is not None:
        return literal
    if host and all(part for part in host.split(".")) and host.replace(".", "").isalnum():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def check_literal(url: str) -> None:
    """The cheap part of `check_url`: what the host says on its own (an address in any form
    the resolver reads as one, or a loopback name), with no DNS lookup."""
    host = _bare_host(url)
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        raise RefusedAddress(host)
    literal = _literal_address(host)
    if literal is not None and not is_public(literal):
        raise RefusedAddress(str(literal))


AddrInfo = tuple[int, int, int, str, tuple[object, ...]]


def refuse_private(addr_info: AddrInfo) -> None:
    """The delivery client's guard (app.http_client): raises RefusedAddress for an address
    that is not public, before a socket is made for it."""
    address = str(addr_info[4][0])
    ip = parse_ip(address)
    if ip is None or not is_public(ip):
        raise RefusedAddress(address)
