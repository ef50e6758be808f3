"""Refusing webhook targets inside private networks (SSRF).

Two checks, because either alone can be bypassed:
- when a URL is registered: every address its host resolves to must be public;
- when a connection is opened: the address actually dialled must be public. This is the one
  that counts — DNS can answer differently a second later (rebinding), and aiohttp does not
  consult its resolver for literal IPs — so it sits in the connector's socket factory, which
  sees every connection attempt with its final address.

"Public" is Python's `is_global`, minus multicast, with IPv4 hidden inside IPv6 (mapped, NAT64,
6to4, Teredo) judged by the IPv4 address. Loopback, RFC 1918, link-local (and with it the cloud
metadata address 169.254.169.254), CGNAT, unspecified, reserved and documentation ranges all
fail it.
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
    return ip.is_global and not ip.is_multicast


def parse_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def check_url(url: str) -> None:
    """Raises RefusedAddress unless every address of the URL's host is public.

    Raises OSError (socket.gaierror) when the name does not resolve."""
    host = urlsplit(url).hostname or ""
    literal = parse_ip(host)
    if literal is not None:
        if not is_public(literal):
            raise RefusedAddress(str(literal))
        return
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    for info in infos:
        address = str(info[4][0])
        ip = parse_ip(address)
        if ip is None or not is_public(ip):
            raise RefusedAddress(address)


def check_literal(url: str) -> None:
    """The cheap part of `check_url`: a literal IP or `localhost`, with no DNS lookup."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        raise RefusedAddress(host)
    literal = parse_ip(host)
    if literal is not None and not is_public(literal):
        raise RefusedAddress(str(literal))


AddrInfo = tuple[int, int, int, str, tuple[object, ...]]


def guarded_socket_factory(addr_info: AddrInfo) -> socket.socket:
    """For `aiohttp.TCPConnector(socket_factory=...)`: refuses before any packet is sent."""
    family, type_, proto, _, sockaddr = addr_info
    address = str(sockaddr[0])
    ip = parse_ip(address)
    if ip is None or not is_public(ip):
        raise RefusedAddress(address)
    return socket.socket(family=family, type=type_, proto=proto)
