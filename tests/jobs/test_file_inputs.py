"""File inputs: https URLs and data: URIs in a model's file fields, large ones uploaded to fal's
storage (the fake's, over real HTTP) before the job is stored."""

from __future__ import annotations

import base64
import os
import struct
import zlib

import httpx

from tests.stack import StackFactory
from tests.support import assert_problem, count_jobs, job_uuid

KONTEXT = "fal-ai/flux-pro/kontext"


def png(width: int, height: int, noise: bool = False) -> bytes:
    """A real PNG; with `noise`, incompressible, so its size is about width x height x 3."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = (lambda: os.urandom(width * 3)) if noise else (lambda: b"\x80" * width * 3)
    raw = b"".join(b"\x00" + row() for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def data_uri(data: bytes, content_type: str = "image/png") -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


def edit(image_url: object) -> dict[str, object]:
    return {"model": KONTEXT, "input": {"prompt": "make it blue", "image_url": image_url}}


async def test_a_large_data_uri_is_uploaded_to_fals_storage_and_the_job_keeps_its_url(
    make_stack: StackFactory,
) -> None:
    image = png(200, 200, noise=True)  # about 120 KB: above the 64 KiB kept inline
    async with make_stack() as stack:
        response = await stack.api.post("/v1/jobs", json=edit(data_uri(image)))
        assert response.status_code == 201, response.text
        job = response.json()
        url = job["input"]["image_url"]
        assert url.startswith(f"{stack.fal_url}/files/")
        stored = await stack.pool.fetchval(
            "SELECT input->>'image_url' FROM jobs WHERE id = $1", job_uuid(job["id"])
        )
        assert stored == url
        async with httpx.AsyncClient() as public:
            served = await public.get(url)
        assert served.status_code == 200
        assert served.content == image  # byte for byte
        assert served.headers["content-type"] == "image/png"
        done = await stack.wait_for(job["id"], within=30)
        assert done["status"] == "succeeded", done
        assert done["files"][0]["kind"] == "image"


async def test_a_small_data_uri_is_sent_to_fal_as_it_is(make_stack: StackFactory) -> None:
    uri = data_uri(png(8, 8))
    async with make_stack() as stack:
        response = await stack.api.post("/v1/jobs", json=edit(uri))
        assert response.status_code == 201, response.text
        stored = await stack.pool.fetchval(
            "SELECT input->>'image_url' FROM jobs WHERE id = $1", job_uuid(response.json()["id"])
        )
        assert stored == uri


async def test_refused_file_inputs_are_422s_at_the_field_and_store_nothing(
    make_stack: StackFactory,
) -> None:
    big = os.urandom(3000)
    cases = {
        "a text file where an image goes": data_uri(b"hello", "text/plain"),
        "not base64": "data:image/png;base64,***",
        "not a data URI": "data:image/png;base64",
        "above the size limit": data_uri(big),
        "no data": "data:image/png;base64,",
        "a plain http URL": "http://images.example/cat.png",
        "not a URL": "cat.png",
        "a number": 7,
    }
    async with make_stack(allow_private_webhook_urls=False, max_input_file_bytes=2048) as stack:
        for name, value in cases.items():
            response = await stack.api.post("/v1/jobs", json=edit(value))
            problem = assert_problem(response, 422, "validation")
            locs = [issue["loc"] for issue in problem["errors"]]
            assert locs == [["body", "input", "image_url"]], (name, problem)
            assert "***" not in response.text
        assert await count_jobs(stack.pool, stack.client_id) == 0
        ok = await stack.api.post("/v1/jobs", json=edit("https://images.example/cat.png"))
        assert ok.status_code == 201, ok.text


async def test_a_replay_with_the_same_file_is_the_same_job(make_stack: StackFactory) -> None:
    body = edit(data_uri(png(200, 200, noise=True)))
    headers = {"Idempotency-Key": "edit-1"}
    async with make_stack() as stack:
        first = await stack.api.post("/v1/jobs", json=body, headers=headers)
        again = await stack.api.post("/v1/jobs", json=body, headers=headers)
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json()["id"] == first.json()["id"]
        other = edit(data_uri(png(200, 200, noise=True)))  # another image: another request
        reused = await stack.api.post("/v1/jobs", json=other, headers=headers)
        assert_problem(reused, 422, "idempotency-key-reused")
        assert await count_jobs(stack.pool, stack.client_id) == 1


async def test_when_fals_storage_is_down_the_job_is_a_503_and_nothing_is_stored(
    make_stack: StackFactory,
) -> None:
    # Nothing listens on loopback port 1.
    async with make_stack(fal_cdn_url="http://127.0.0.1:1") as stack:
        response = await stack.api.post("/v1/jobs", json=edit(data_uri(png(200, 200, True))))
        assert_problem(response, 503, "fal-storage-unavailable")
        assert await count_jobs(stack.pool, stack.client_id) == 0
