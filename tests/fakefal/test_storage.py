"""The fake's storage over plain HTTP: the CDN token, uploads (direct, initiated, multipart),
files served back byte for byte, auth, and the bound on what it keeps."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.routing import Mount

from app.fakefal import FakeFal, FakeFalConfig
from tests.fakefal.conftest import StartFake
from tests.fakefal.support import IMAGINEART, RunningFake
from tests.servers import LiveServer


async def cdn_token(http: httpx.AsyncClient, fake: RunningFake) -> dict[str, Any]:
    response = await http.post(
        f"{fake.url}/storage/auth/token", params={"storage_type": "fal-cdn-v3"}, json={}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def upload(
    fake: RunningFake, token: dict[str, Any], data: bytes, content_type: str, name: str | None
) -> httpx.Response:
    """As falrelay's own server uploads: the token, then the bytes to {cdn}/files/upload."""
    headers = {
        "Authorization": f"{token['token_type']} {token['token']}",
        "Content-Type": content_type,
    }
    if name is not None:
        headers["X-Fal-File-Name"] = name
    async with httpx.AsyncClient() as plain:
        return await plain.post(f"{fake.url}/files/upload", content=data, headers=headers)


async def test_token_then_upload_then_the_file(fake: RunningFake, http: httpx.AsyncClient) -> None:
    token = await cdn_token(http, fake)
    assert token["token_type"] == "Bearer"
    assert token["base_url"] == fake.url
    # fal_client compares it with an aware "now": it must carry its zone.
    assert datetime.fromisoformat(token["expires_at"]) > datetime.now(UTC)

    data = os.urandom(4000)
    response = await upload(fake, token, data, "image/png", "my fox.png")
    assert response.status_code == 200
    url = response.json()["access_url"]
    assert url.startswith(f"{fake.url}/files/u/")
    assert url.endswith("/my_fox.png")
    async with httpx.AsyncClient() as public:  # files need no credentials
        served = await public.get(url)
        head = await public.head(url)
    assert (served.status_code, served.content) == (200, data)
    assert served.headers["content-type"] == "image/png"
    assert (head.status_code, head.headers["content-length"]) == (200, "4000")
    # A name from the content type when none is given; the type is kept exactly.
    unnamed = await upload(fake, token, b"{}", "application/json; charset=utf-8", None)
    unnamed_url = unnamed.json()["access_url"]
    assert unnamed_url.endswith("/upload.json")
    text = await http.get(unnamed_url)
    assert text.headers["content-type"] == "application/json; charset=utf-8"


async def test_uploads_need_a_token_from_the_fake(
    fake: RunningFake, http: httpx.AsyncClient
) -> None:
    async with httpx.AsyncClient() as anonymous:
        refused = await anonymous.post(f"{fake.url}/storage/auth/token", json={})
        assert refused.status_code == 401
        for authorization in [None, "Key test-key", "Bearer made-up", "Bearer 1.2.3"]:
            headers = {} if authorization is None else {"Authorization": authorization}
            response = await anonymous.post(
                f"{fake.url}/files/upload", content=b"x", headers=headers
            )
            assert response.status_code == 401, authorization
            assert isinstance(response.json()["detail"], str)
        initiate = await anonymous.post(f"{fake.url}/storage/upload/initiate", json={})
        assert initiate.status_code == 401
    # The token is this fake's, signed: another fake's (or a forged one) is refused.
    token = await cdn_token(http, fake)
    forged = {**token, "token": token["token"][:-1] + ("0" if token["token"][-1] != "0" else "1")}
    assert (await upload(fake, forged, b"x", "text/plain", None)).status_code == 401


async def test_storage_paths_are_never_models(fake: RunningFake, http: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/storage/auth/token"),
        ("POST", "/storage/anything/else"),
        ("POST", "/files/anything"),
        ("POST", "/run"),
        ("POST", "/_fake/anything"),
    ]:
        response = await http.request(method, fake.url + path, json={})
        assert response.status_code in (404, 405), (method, path)
    assert fake.fake.stats.submitted == 0
    assert len(fake.fake.requests) == 0


async def test_initiate_then_put(fake: RunningFake, http: httpx.AsyncClient) -> None:
    response = await http.post(
        f"{fake.url}/storage/upload/initiate",
        params={"storage_type": "fal-cdn-v3"},
        json={"content_type": "audio/mpeg", "file_name": "song.mp3"},
    )
    assert response.status_code == 200
    urls = response.json()
    assert urls["file_url"].endswith("/song.mp3")
    assert (await http.get(urls["file_url"])).status_code == 404  # nothing uploaded yet
    data = os.urandom(2 * 1024 * 1024 + 5)  # past the in-memory size: kept on disk
    async with httpx.AsyncClient() as plain:  # the upload URL is a capability
        put = await plain.put(urls["upload_url"], content=data)
        assert put.status_code == 200
        again = await plain.put(urls["upload_url"], content=b"other")
        assert again.status_code == 404
    served = await http.get(urls["file_url"])
    assert served.content == data
    assert served.headers["content-type"] == "audio/mpeg"
    assert served.headers["content-length"] == str(len(data))


async def test_multipart_as_the_js_client_does_it(
    fake: RunningFake, http: httpx.AsyncClient
) -> None:
    started = await http.post(
        f"{fake.url}/storage/upload/initiate-multipart",
        json={"content_type": "video/mp4", "file_name": "clip.mp4"},
    )
    urls = started.json()
    parts = [os.urandom(300_000), os.urandom(300_000), b"tail"]
    answers = []
    async with httpx.AsyncClient() as plain:
        for number in (3, 1, 2):  # any order; the part number places each one
            put = await plain.put(f"{urls['upload_url']}/{number}", content=parts[number - 1])
            assert put.status_code == 200
            assert put.json()["etag"] == put.headers["etag"]
            answers.append(put.json())
        assert (await http.get(urls["file_url"])).status_code == 404
        bad = await plain.post(
            f"{urls['upload_url']}/complete",
            json={"parts": [{"partNumber": 1, "etag": '"nope"'}]},
        )
        assert bad.status_code == 400
        done = await plain.post(f"{urls['upload_url']}/complete", json={"parts": answers})
        assert done.status_code == 200
    served = await http.get(urls["file_url"])
    assert served.content == b"".join(parts)
    assert served.headers["content-type"] == "video/mp4"


async def test_multipart_as_fal_client_does_it(fake: RunningFake, http: httpx.AsyncClient) -> None:
    token = await cdn_token(http, fake)
    auth = {"Authorization": f"{token['token_type']} {token['token']}"}
    async with httpx.AsyncClient(headers=auth) as cdn:
        created = await cdn.post(
            f"{token['base_url']}/files/upload/multipart",
            headers={"Content-Type": "application/zip", "X-Fal-File-Name": "big.zip"},
        )
        access_url, upload_id = created.json()["access_url"], created.json()["uploadId"]
        parts = [os.urandom(1024 * 1024 + 1), os.urandom(10)]
        listed = []
        for number, part in enumerate(parts, start=1):
            put = await cdn.put(f"{access_url}/multipart/{upload_id}/{number}", content=part)
            listed.append({"partNumber": number, "etag": put.headers["etag"]})
        async with httpx.AsyncClient() as anonymous:
            refused = await anonymous.post(
                f"{access_url}/multipart/{upload_id}/complete", json={"parts": listed}
            )
            assert refused.status_code == 401
        complete = await cdn.post(
            f"{access_url}/multipart/{upload_id}/complete", json={"parts": listed[::-1]}
        )
        assert complete.status_code == 200
    served = await http.get(access_url)
    assert served.content == b"".join(parts)
    assert served.headers["content-type"] == "application/zip"


async def test_storage_is_bounded(start_fake: StartFake, http: httpx.AsyncClient) -> None:
    fake = start_fake(storage_max_bytes=10_000)
    token = await cdn_token(http, fake)
    first = (await upload(fake, token, b"a" * 6000, "text/plain", "a.txt")).json()["access_url"]
    second = (await upload(fake, token, b"b" * 6000, "text/plain", "b.txt")).json()["access_url"]
    # The second did not fit beside the first: the oldest file went, as an expiry would.
    assert (await http.get(first)).status_code == 404
    assert (await http.get(second)).content == b"b" * 6000
    too_big = await upload(fake, token, b"c" * 10_001, "text/plain", "c.txt")
    assert too_big.status_code == 413
    assert fake.fake.files.used_bytes <= 10_000
    # A reset forgets uploads too.
    await http.post(f"{fake.url}/_fake/reset")
    assert (await http.get(second)).status_code == 404
    assert fake.fake.files.used_bytes == 0


async def test_mounted_under_a_prefix_as_in_falrelay_dev(http: httpx.AsyncClient) -> None:
    fake = FakeFal(FakeFalConfig())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await fake.aclose()

    parent = Starlette(routes=[Mount("/fakefal", fake.app)], lifespan=lifespan)
    with LiveServer(parent) as server:
        base = f"{server.url}/fakefal"
        running = RunningFake(fake, base)
        token = await cdn_token(http, running)
        assert token["base_url"] == base
        url = (await upload(running, token, b"abc", "text/csv", "t.csv")).json()["access_url"]
        assert url.startswith(f"{base}/files/u/")
        assert (await http.get(url)).content == b"abc"
        run = await http.post(f"{base}/run/{IMAGINEART}", json={"prompt": "p", "resolution": "1K"})
        assert run.json()["images"][0]["url"].startswith(f"{base}/files/")
