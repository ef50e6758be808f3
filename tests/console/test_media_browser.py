"""Sound and video players in a real browser (Debian's chromium), against the whole product on
loopback: the page's security policy lets them load a file from a file host, as it lets images."""

from __future__ import annotations

import io
import math
import struct
import wave
from collections.abc import Iterator

import pytest
from playwright.async_api import Browser, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.console.browser import log_in
from tests.servers import LiveServer
from tests.stack import StackFactory
from tests.support import job_uuid

RATE = 8000
SECONDS = 1.5


def tone() -> bytes:
    """A 440 Hz WAV of SECONDS: a file every browser plays."""
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * n / RATE)))
        for n in range(int(RATE * SECONDS))
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as sound:
        sound.setnchannels(1)
        sound.setsampwidth(2)
        sound.setframerate(RATE)
        sound.writeframes(frames)
    return out.getvalue()


@pytest.fixture
def file_host() -> Iterator[str]:
    """Another origin serving the file, as fal's CDN does."""
    data = tone()

    async def serve(request: Request) -> Response:
        return Response(data, media_type="audio/wav")

    with LiveServer(Starlette(routes=[Route("/files/tone.wav", serve)])) as server:
        yield server.url


async def test_the_job_page_plays_an_audio_output_from_a_file_host(
    make_stack: StackFactory, file_host: str, browser: Browser
) -> None:
    async with make_stack() as stack:
        job = await stack.wait_for(await stack.create_job("a fox barking"))
        assert job["status"] == "succeeded"
        url = f"{file_host}/files/tone.wav"
        await stack.pool.execute(
            "UPDATE jobs SET output = $2 WHERE id = $1",
            job_uuid(job["id"]),
            {"audio": {"url": url, "content_type": "audio/wav", "file_name": "tone.wav"}},
        )
        key = stack.api.headers["authorization"].removeprefix("Bearer ")
        page = await browser.new_page()
        blocked: list[str] = []
        page.on("console", lambda message: blocked.append(message.text))
        try:
            await log_in(page, stack.service_url, key)
            await page.goto(f"{stack.service_url}/console/jobs/{job['id']}")
            player = page.locator(".file-audio audio")
            await expect(player).to_have_attribute("src", url)
            # HAVE_METADATA: the browser fetched the file and read its length.
            await page.wait_for_function(
                "a => a.readyState >= 1", arg=await player.element_handle(), timeout=10_000
            )
            duration = await player.evaluate("a => a.duration")
            assert duration == pytest.approx(SECONDS, abs=0.05)
            assert not [text for text in blocked if "Content Security Policy" in text]
        finally:
            await page.close()
