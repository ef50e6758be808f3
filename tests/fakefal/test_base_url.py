"""The base URL a request reached the fake at is kept by what it is made of (scheme, Host
header, server address, mount prefix): whatever the path, it is what Starlette's URL makes."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request

from app.fakefal.server import _base_url, _url_base

HOSTS: list[bytes | None] = [
    b"fake.test",
    b"127.0.0.1:8000",
    b"[::1]:9",
    b"",
    b"a/b",
    b"a?b",
    b"a#b",
    b"user@h:1",
    None,
]
PATHS = ["/x", "//evil.test/y", "/a?b#c", "/", "/fal/owner/app", "/caf\u00e9"]


def _request(host: bytes | None, root_path: str, path: str, server: Any) -> Request:
    headers = [] if host is None else [(b"host", host)]
    scope = {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "server": server,
        "path": path,
        "root_path": root_path,
        "query_string": b"q=1",
        "headers": headers,
    }
    return Request(scope)


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("root_path", ["", "/fal"])
@pytest.mark.parametrize("server", [("10.0.0.1", 8080), ("10.0.0.1", 80), None])
def test_the_kept_base_url_is_starlettes_for_every_path(
    host: bytes | None, root_path: str, server: Any
) -> None:
    for path in PATHS:
        request = _request(host, root_path, path, server)
        assert _base_url(request) == _url_base(request, root_path), (host, path)
