"""The connect-time guard, called as aiohttp calls it; it must refuse before any packet."""

from __future__ import annotations

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
]


@pytest.mark.parametrize(("family", "address"), REFUSED)
def test_the_socket_factory_refuses_every_non_public_address(
    family: socket.AddressFamily, address: str
) -> None:
    sockaddr = (address, 443) if family == socket.AF_INET else (address, 443, 0, 0)
    with pytest.raises(ssrf.RefusedAddress) as refused:
        ssrf.guarded_socket_factory((family, socket.SOCK_STREAM, 6, "", sockaddr))
    assert refused.value.address == address


def test_the_socket_factory_makes_a_socket_for_a_public_address() -> None:
    # Only a socket object is made; nothing connects.
    sock = ssrf.guarded_socket_factory(
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 443))
    )
    try:
        assert sock.family == socket.AF_INET
    finally:
        sock.close()


async def test_check_url_resolves_names() -> None:
    with pytest.raises(ssrf.RefusedAddress):
        await ssrf.check_url("http://localhost:9/x")
    await ssrf.check_url("https://93.184.215.14/x")  # a literal: no lookup


def test_literal_check_needs_no_dns() -> None:
    with pytest.raises(ssrf.RefusedAddress):
        ssrf.check_literal("http://LOCALHOST/x")
    with pytest.raises(ssrf.RefusedAddress):
        ssrf.check_literal("http://[::ffff:192.168.0.1]/x")
    ssrf.check_literal("https://hooks.client.example/x")  # a name: left to connect time
