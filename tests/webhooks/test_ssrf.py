"""The connect-time guard, called as aiohttp calls it; it must refuse before any packet."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from app.webhooks import ssrf

REFUSED = [
    (socket.AF_INET, "127.0.0.1"),
    (socket.AF_INET, "10.9.8.7"),
    (socket.AF_INET, "169.254.169.254"),
    (socket.AF_INET, "100.64.1.1"),
    (socket.AF_INET, "0.0.0.0"),
    (socket.AF_INET, "224.0.0.251"),
    (socket.AF_INET6, "::1"),
    (socket.AF_INET6, "fe80::1"),
    (socket.AF_INET6, "fd12:3456::1"),
    (socket.AF_INET6, "::ffff:10.0.0.1"),
    (socket.AF_INET6, "64:ff9b::7f00:1"),
    # Forms Python's is_global passes, though no public host uses them.
    (socket.AF_INET6, "::7f00:1"),  # IPv4-compatible ::127.0.0.1 (::/96)
    (socket.AF_INET6, "::a9fe:a9fe"),  # IPv4-compatible ::169.254.169.254
    (socket.AF_INET6, "::ffff:0:7f00:1"),  # SIIT ::ffff:0:127.0.0.1
    (socket.AF_INET6, "::ffff:0:a00:1"),  # SIIT ::ffff:0:10.0.0.1
    (socket.AF_INET6, "fec0::1"),  # site-local (fec0::/10)
    (socket.AF_INET6, "feff::1"),
    (socket.AF_INET6, "3fff::1"),  # documentation (RFC 9637)
    (socket.AF_INET6, "5f00::1"),  # SRv6 SIDs
    (socket.AF_INET6, "4000::1"),  # unallocated
    (socket.AF_INET6, "ff0e::1"),  # global-scope multicast
]

# Every IPv6 form above that Python's own table calls global: the reason for the guard's rule.
IS_GLOBAL_YET_REFUSED = [
    "::7f00:1",
    "::ffff:0:7f00:1",
    "fec0::1",
    "3fff::1",
    "5f00::1",
    "4000::1",
]


@pytest.mark.parametrize(("family", "address"), REFUSED)
def test_the_guard_refuses_every_non_public_address(
    family: socket.AddressFamily, address: str
) -> None:
    sockaddr = (address, 443) if family == socket.AF_INET else (address, 443, 0, 0)
    with pytest.raises(ssrf.RefusedAddress) as refused:
        ssrf.refuse_private((family, socket.SOCK_STREAM, 6, "", sockaddr))
    assert refused.value.address == address


@pytest.mark.parametrize("address", IS_GLOBAL_YET_REFUSED)
def test_is_global_is_not_enough_for_ipv6(address: str) -> None:
    ip = ipaddress.IPv6Address(address)
    assert ip.is_global
    assert not ssrf.is_public(ip)


@pytest.mark.parametrize(
    "address",
    ["2001:4860:4860::8888", "2606:4700:4700::1111", "::ffff:93.184.215.14", "64:ff9b::5db8:d70e"],
)
def test_public_ipv6_stays_public(address: str) -> None:
    # Google's and Cloudflare's resolvers; a public IPv4 address mapped, and through NAT64.
    assert ssrf.is_public(ipaddress.IPv6Address(address))


def test_the_guard_lets_a_public_address_through() -> None:
    # A check of the address alone: nothing is dialled.
    ssrf.refuse_private((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 443)))
    v6 = ("2606:4700::1111", 443, 0, 0)
    ssrf.refuse_private((socket.AF_INET6, socket.SOCK_STREAM, 6, "", v6))


async def test_check_url_resolves_names() -> None:
    with pytest.raises(ssrf.RefusedAddress):
        await ssrf.check_url("http://localhost:9/x")
    await ssrf.check_url("https://93.184.215.14/x")  # a literal: no lookup


@pytest.mark.parametrize(
    "url",
    [
        "http://LOCALHOST/x",
        "http://LOCALHOST.:9/x",  # fully qualified: still localhost
        "http://localhost../x",
        "http://api.localhost./x",
        "http://ip6-localhost/x",
        "http://127.0.0.1./x",
        "http://[::ffff:192.168.0.1]/x",
        "http://[::127.0.0.1]/x",
        "http://[::ffff:0:127.0.0.1]/x",
        "http://[fec0::1]/x",
        "http://2130706433/x",  # numeric forms getaddrinfo reads as 127.0.0.1, with no DNS
        "http://0x7f.1/x",
        "http://127.1/x",
        "http://0177.0.0.1/x",
        "http://0xa000001/x",  # 10.0.0.1
    ],
)
def test_literal_check_needs_no_dns(url: str) -> None:
    with pytest.raises(ssrf.RefusedAddress):
        ssrf.check_literal(url)


@pytest.mark.parametrize(
    "url",
    ["https://hooks.client.example/x", "https://93.184.215.14/x", "http://cafe/x", "http://1e3/x"],
)
def test_literal_check_leaves_names_to_resolution(url: str) -> None:
    ssrf.check_literal(url)  # a name (or a public address): left to resolution and connect time
