"""The requests the benchmarks send: one realistic job, about 1 KB of JSON (the size of the
Postgres yardstick row in reference/perf-baseline.md)."""

from __future__ import annotations

import json
from typing import Any

PROMPT = (
    "A red fox standing in fresh snow at the edge of a birch forest at dawn, low golden light "
    "raking across the drifts, breath visible in the cold air, frost on its whiskers, shallow "
    "depth of field with the trees dissolving into soft pale bokeh, a few snowflakes still "
    "falling and catching the light. Shot on a medium-format camera with a long lens, natural "
    "colours, fine detail in the fur, the fox looking slightly to the left of the frame with "
    "its tail curled around its feet; quiet, calm, wintry mood, no people, no text, no "
    "watermark, photorealistic, crisp focus on the eyes, subtle blue shadows in the snow and "
    "warm highlights on the fur, composition following the rule of thirds."
)


def job_request(**metadata: str) -> dict[str, Any]:
    return {
        "model": "imagineart/imagineart-2.0-preview/text-to-image",
        "input": {"prompt": PROMPT, "aspect_ratio": "16:9", "resolution": "1K", "seed": 42},
        "metadata": {"order_id": "A-1001", "customer": "bench", **metadata},
    }


def job_request_json(**metadata: str) -> str:
    return json.dumps(job_request(**metadata), separators=(",", ":"))


def succeeded_event(job_id: str, at: str) -> dict[str, Any]:
    """A `job.succeeded` webhook body as falrelay sends it (about 1.5 KB)."""
    request = job_request()
    return {
        "type": "job.succeeded",
        "timestamp": at,
        "data": {
            "id": job_id,
            "model": request["model"],
            "status": "succeeded",
            "input": {**request["input"], "reasoning": "low"},
            "metadata": request["metadata"],
            "callback_url": None,
            "output": {
                "images": [
                    {
                        "url": "https://v3.fal.media/files/fox/3f1c9a7e5b2d4c6e8a0b1c2d3e4f5a6b.png",
                        "content_type": "image/png",
                        "width": 1280,
                        "height": 720,
                        "file_name": "3f1c9a7e5b2d4c6e8a0b1c2d3e4f5a6b.png",
                        "file_size": 1_482_391,
                    }
                ]
            },
            "error": None,
            "fal_request_id": "764cabcf-b745-4b3e-ae38-1200304cf45b",
            "created_at": at,
            "submitted_at": at,
            "started_at": at,
            "completed_at": at,
        },
    }
