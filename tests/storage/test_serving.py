"""A file:// store's objects served by a running falrelay at their signed URLs: signature and
expiry checked (403), ranges (206, 416), validators (304), HEAD, and keys that could escape."""

from __future__ import annotations

import hashlib
import os
import time
from urllib.parse import quote

import httpx
import pytest

from app.storage.file_urls import FileUrls
from tests.storage.conftest import Served
from tests.storage.support import MIB, Body
from tests.support import assert_problem

DATA = bytes(range(256)) * 40  # 10,240 bytes


@pytest.fixture(scope="module")
async def http(served: Served) -> httpx.AsyncClient:
    async with httpx.AsyncClient(base_url=served.url) as client:
        yield client  # type: ignore[misc]


@pytest.fixture(scope="module")
async def image(served: Served) -> str:
    await served.store.put_bytes("jobs/s/0-image.png", DATA, content_type="image/png")
    return "jobs/s/0-image.png"


async def test_the_url_serves_the_file_with_its_headers(
    served: Served, http: httpx.AsyncClient, image: str
) -> None:
    url = served.store.url(image)
    assert url.startswith(f"/files/{image}?expires=")  # relative: no public_base_url
    response = await http.get(url)
    assert response.status_code == 200
    assert response.content == DATA
    headers = response.headers
    assert headers["content-type"] == "image/png"
    assert headers["content-length"] == str(len(DATA))
    assert headers["accept-ranges"] == "bytes"
    assert headers["etag"].startswith('"')
    assert headers["x-content-type-options"] == "nosniff"
    cache, max_age = headers["cache-control"].split(", max-age=")
    assert cache == "private"
    expires = int(url.split("expires=")[1].split("&")[0])
    assert abs(int(max_age) - (expires - time.time())) <= 2
    assert 3600 <= int(max_age) <= 3600 + 360  # the TTL, its expiry rounded up to a step


async def test_head_answers_the_headers_without_the_body(
    served: Served, http: httpx.AsyncClient, image: str
) -> None:
    response = await http.head(served.store.url(image))
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(DATA))
    assert response.headers["content-type"] == "image/png"
    assert response.content == b""


@pytest.mark.parametrize(
    ("range_", "start", "stop"),
    [("bytes=0-0", 0, 1), ("bytes=100-199", 100, 200), ("bytes=10000-", 10000, 10240),
     ("bytes=-40", 10200, 10240), ("bytes=10200-99999", 10200, 10240), ("bytes=-99999", 0, 10240)],
)  # fmt: skip
async def test_a_range_is_served_as_206(
    served: Served, http: httpx.AsyncClient, image: str, range_: str, start: int, stop: int
) -> None:
    response = await http.get(served.store.url(image), headers={"Range": range_})
    assert response.status_code == 206
    assert response.content == DATA[start:stop]
    assert response.headers["content-range"] == f"bytes {start}-{stop - 1}/{len(DATA)}"
    assert response.headers["content-length"] == str(stop - start)


@pytest.mark.parametrize("range_", ["bytes=10240-", "bytes=99999-100000", "bytes=-0"])
async def test_a_range_past_the_end_is_416(
    served: Served, http: httpx.AsyncClient, image: str, range_: str
) -> None:
    response = await http.get(served.store.url(image), headers={"Range": range_})
    assert_problem(response, 416, "range-not-satisfiable")
    assert response.headers["content-range"] == f"bytes */{len(DATA)}"


@pytest.mark.parametrize(
    "range_", ["bytes=0-1,5-6", "items=0-1", "bytes=5-1", "bytes=abc", "bytes=", "bytes=--1"]
)
async def test_ranges_we_do_not_serve_get_the_whole_file(
    served: Served, http: httpx.AsyncClient, image: str, range_: str
) -> None:
    response = await http.get(served.store.url(image), headers={"Range": range_})
    assert (response.status_code, response.content) == (200, DATA)


async def test_a_current_copy_gets_304(served: Served, http: httpx.AsyncClient, image: str) -> None:
    url = served.store.url(image)
    etag = (await http.get(url)).headers["etag"]
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        response = await http.get(url, headers={"If-None-Match": header})
        assert response.status_code == 304, header
        assert response.content == b""
        assert response.headers["etag"] == etag
        assert response.headers["cache-control"].startswith("private, max-age=")
    assert (await http.get(url, headers={"If-None-Match": '"other"'})).status_code == 200
    # If-Range: the range only while the client's copy is ours, else the whole file.
    ranged = await http.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert ranged.status_code == 206
    stale = await http.get(url, headers={"Range": "bytes=0-9", "If-Range": '"old"'})
    assert (stale.status_code, stale.content) == (200, DATA)


async def test_a_replaced_file_gets_a_new_etag(served: Served, http: httpx.AsyncClient) -> None:
    await served.store.put_bytes("jobs/s/9-replaced.txt", b"one", content_type="text/plain")
    first = (await http.get(served.store.url("jobs/s/9-replaced.txt"))).headers["etag"]
    await served.store.put_bytes("jobs/s/9-replaced.txt", b"two", content_type="text/plain")
    response = await http.get(
        served.store.url("jobs/s/9-replaced.txt"), headers={"If-None-Match": first}
    )
    assert (response.status_code, response.content) == (200, b"two")
    assert response.headers["etag"] != first


async def test_expired_and_forged_urls_are_refused(
    served: Served, http: httpx.AsyncClient, image: str
) -> None:
    urls = served.store.urls
    # Made a day ago with an hour to live: expired, though its signature is ours.
    expired = urls.url(image, now=time.time() - 86400)
    assert_problem(await http.get(expired), 403, "forbidden")
    good = served.store.url(image)
    path, query = good.split("?")
    expires = query.split("&")[0].removeprefix("expires=")
    signature = query.split("signature=")[1]
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    forged = [
        path,  # no signature at all
        f"{path}?expires={expires}",
        f"{path}?signature={signature}",
        f"{path}?expires={expires}&signature={flipped}",
        f"{path}?expires={int(expires) + 3600}&signature={signature}",  # a longer life
        f"{path}?expires=\uff11\uff12\uff13&signature={signature}",  # fullwidth digits
        f"{path}?expires={'9' * 5000}&signature={signature}",
        f"{path}?expires={expires}&signature=é",
        # Another file's path with this file's signature.
        f"/files/jobs/s/9-replaced.txt?expires={expires}&signature={signature}",
        # A signature from another deployment's secret.
        FileUrls("another-secret", None, 3600).url(image, now=time.time()),
    ]
    for url in forged:
        response = await http.get(url)
        assert_problem(response, 403, "forbidden")
        assert response.headers.get("etag") is None, url
    assert (await http.get(good)).status_code == 200


async def test_a_missing_file_with_a_valid_signature_is_404(
    served: Served, http: httpx.AsyncClient
) -> None:
    assert_problem(await http.get(served.store.url("jobs/s/never-written.png")), 404)
    (served.store.root / "jobs" / "dir-only").mkdir(parents=True)
    assert_problem(await http.get(served.store.url("jobs/dir-only")), 404)


@pytest.mark.parametrize(
    "key", ["../outside.txt", "jobs/../../outside.txt", "/etc/passwd", "..\\outside.txt",
            "jobs//x", ".falrelay-secret"],
)  # fmt: skip
async def test_keys_that_could_escape_are_never_served(
    served: Served, http: httpx.AsyncClient, key: str
) -> None:
    outside = served.store.root.parent / "outside.txt"
    outside.write_bytes(b"not for the web")
    (served.store.root / ".falrelay-secret").write_bytes(b"hidden")
    # Even signed with the real secret (which an attacker does not have), and encoded so that
    # no client normalises the dots away.
    urls = served.store.urls
    expires = urls.expiry(time.time())
    signature = urls.signature(key, expires)
    url = f"/files/{quote(key, safe='')}?expires={expires}&signature={signature}"
    response = await http.get(url)
    assert response.status_code in (403, 404), response.status_code
    assert b"not for the web" not in response.content
    assert b"hidden" not in response.content


async def test_a_symlink_under_the_root_is_not_followed(
    served: Served, http: httpx.AsyncClient
) -> None:
    secret = served.store.root.parent / "secret.txt"
    secret.write_bytes(b"not for the web")
    (served.store.root / "jobs").mkdir(exist_ok=True)
    os.symlink(secret, served.store.root / "jobs" / "link.txt")
    assert_problem(await http.get(served.store.url("jobs/link.txt")), 404)


async def test_the_type_is_guessed_where_the_file_carries_none(
    served: Served, http: httpx.AsyncClient
) -> None:
    # A file put there by other means (a restore, a filesystem without extended attributes).
    (served.store.root / "restored").mkdir(exist_ok=True)
    (served.store.root / "restored" / "clip.mp4").write_bytes(b"\x00" * 10)
    (served.store.root / "restored" / "blob").write_bytes(b"\x00" * 10)
    mp4 = await http.get(served.store.url("restored/clip.mp4"))
    assert (mp4.status_code, mp4.headers["content-type"]) == (200, "video/mp4")
    blob = await http.get(served.store.url("restored/blob"))
    assert blob.headers["content-type"] == "application/octet-stream"


async def test_a_large_file_streams_through_the_route(
    served: Served, http: httpx.AsyncClient
) -> None:
    body = Body(30 * MIB)
    await served.store.put("jobs/big/0-video.mp4", body.chunks(), content_type="video/mp4")
    digest = hashlib.sha256()
    async with http.stream("GET", served.store.url("jobs/big/0-video.mp4")) as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == str(30 * MIB)
        async for chunk in response.aiter_bytes():
            digest.update(chunk)
    assert digest.hexdigest() == body.hexdigest()
    tail = await http.get(
        served.store.url("jobs/big/0-video.mp4"), headers={"Range": f"bytes={30 * MIB - 5}-"}
    )
    assert (tail.status_code, len(tail.content)) == (206, 5)


async def test_urls_agree_across_replicas_and_use_the_public_base_url(
    served: Served, database_url: str
) -> None:
    from app.db.pool import create_pool
    from app.storage import file_urls

    other_pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        other = await file_urls.load(other_pool, "https://relay.example/", 3600)
    finally:
        await other_pool.close()
    now = time.time()
    ours = served.store.urls.url("jobs/1/0-a b.png", now=now)
    theirs = other.url("jobs/1/0-a b.png", now=now)
    assert ours.startswith("/files/jobs/1/0-a%20b.png?expires=")
    assert theirs == "https://relay.example" + ours


async def test_no_files_are_served_without_a_file_store(anonymous: httpx.AsyncClient) -> None:
    # The suite's app has no FALRELAY_STORAGE_URL.
    urls = FileUrls("whatever", None, 3600)
    assert_problem(await anonymous.get(urls.url("jobs/1/0-a.png", now=time.time())), 404)
