"""A job for every shipped model through `falrelay dev`, as a newcomer runs it: each job's files
downloaded and checked for what they claim to be (PNG dimensions, an MP4 a decoder plays)."""

from __future__ import annotations

import base64
import io
import os
import struct
import time
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from app.catalog import shipped_models
from tests.cli.test_commands import DevProcess
from tests.jobs.test_file_inputs import png
from tests.servers import free_port

pytestmark = pytest.mark.slow

# An input photo above the size kept inline: `falrelay dev` uploads it to its fake fal's storage.
PHOTO = "data:image/png;base64," + base64.b64encode(png(160, 160, noise=True)).decode()
INPUTS: dict[str, dict[str, Any]] = {
    "imagineart/imagineart-2.0-preview/text-to-image": {
        "prompt": "a lighthouse",
        "resolution": "1K",
    },
    "fal-ai/flux/schnell": {"prompt": "a lighthouse", "num_images": 2},
    "fal-ai/flux/dev": {"prompt": "a lighthouse", "image_size": "square_hd"},
    "fal-ai/flux-pro/kontext": {"prompt": "make it night", "image_url": PHOTO},
    "fal-ai/kling-video/v2.1/standard/image-to-video": {
        "prompt": "waves roll in",
        "image_url": PHOTO,
    },
}


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def check_video(data: bytes) -> None:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frame = next(container.decode(stream))
        assert frame.width > 0
        assert frame.height > 0


def test_every_shipped_model_runs_through_falrelay_dev(tmp_path: Path) -> None:
    assert set(INPUTS) == set(shipped_models()), "a shipped model has no case here"
    dev = DevProcess(tmp_path, free_port())
    try:
        headers = {"Authorization": f"Bearer {dev.key}"}
        with httpx.Client(base_url=dev.base, headers=headers, timeout=30) as api:
            jobs = {}
            for model, model_input in INPUTS.items():
                created = api.post("/v1/jobs", json={"model": model, "input": model_input})
                assert created.status_code == 201, created.text
                jobs[model] = created.json()["id"]
            # A large data URI was uploaded: the job keeps the fake storage's URL.
            kontext = api.get(f"/v1/jobs/{jobs['fal-ai/flux-pro/kontext']}").json()
            assert kontext["input"]["image_url"].startswith(f"{dev.base}/fakefal/files/")

            for model, job_id in jobs.items():
                job = _finished(api, job_id)
                assert job["status"] == "succeeded", (model, job)
                assert job["files"], (model, job)
                for file in job["files"]:
                    data = httpx.get(file["url"], timeout=30).content
                    if file["kind"] == "image":
                        assert png_size(data) == (file["width"], file["height"]), model
                    else:
                        assert file["kind"] == "video", (model, file)
                        assert file["content_type"] == "video/mp4"
                        check_video(data)
            flux = api.get(f"/v1/jobs/{jobs['fal-ai/flux/schnell']}").json()
            assert len(flux["files"]) == 2
    finally:
        dev.stop()


def _finished(api: httpx.Client, job_id: str) -> dict[str, Any]:
    # Generous: every model's fake run is quick, but the machine may be busy.
    deadline = time.monotonic() + float(os.environ.get("FALRELAY_TEST_JOB_SECONDS", "90"))
    while True:
        job: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
