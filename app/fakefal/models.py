"""What the fake's models do with an input: an image generation, or the model's refusal.

Models validate their own input, as fal's do: the queue accepts anything at submit and an invalid
input surfaces as a 422 on the result. ImagineArt 2.0 follows its fal model page; any other model
id answers one 1024x1024 image, enough for a client that only needs a well-formed output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from app.fakefal.failures import Failure, validation_failure
from app.fakefal.images import ImageSpec, image_key
from app.fakefal.sizes import image_size

IMAGINEART = "imagineart/imagineart-2.0-preview/text-to-image"
GENERIC_SIZE = (1024, 1024)
# 0 and -1 ask for a random seed (fal's model page).
RANDOM_SEEDS = (0, -1)


class ImagineArt2Input(BaseModel):
    """Lax, as a FastAPI model app validates: unknown fields are ignored."""

    prompt: str = Field(min_length=1)
    aspect_ratio: Literal[
        "1:1", "16:9", "9:16", "4:3", "3:4", "3:1", "1:3", "3:2", "2:3", "21:9", "4:5", "5:4",
        "4:1", "1:4",
    ] = "1:1"  # fmt: skip
    resolution: Literal["1K", "2K"] = "2K"
    seed: int | None = None
    reasoning: Literal["high", "low"] = "low"


@dataclass(frozen=True, slots=True)
class Generation:
    images: tuple[ImageSpec, ...]
    seed: int

    def output(self, files_url: str) -> dict[str, Any]:
        """The model's output JSON; `files_url` is where this fake serves `/files/`."""
        return {
            "images": [
                {
                    "url": f"{files_url}/{spec.file_name}",
                    "content_type": "image/png",
                    "width": spec.width,
                    "height": spec.height,
                    "file_name": spec.file_name,
                    "file_size": spec.file_size(),
                }
                for spec in self.images
            ],
            "seed": self.seed,
        }


def generate(model_id: str, model_input: Any, random_seed: int) -> Generation | Failure:
    """Run the model; `random_seed` is used when the input asks for a random one."""
    if model_id == IMAGINEART:
        try:
            parsed = ImagineArt2Input.model_validate(model_input)
        except ValidationError as exc:
            return validation_failure(_fastapi_errors(exc))
        seed = random_seed if parsed.seed is None or parsed.seed in RANDOM_SEEDS else parsed.seed
        width, height = image_size(parsed.aspect_ratio, parsed.resolution)
        payload = _canonical(parsed.model_dump(exclude={"seed"}))
        return Generation((ImageSpec(image_key(seed, payload), width, height),), seed)
    given = model_input.get("seed") if isinstance(model_input, dict) else None
    any_seed = random_seed
    if isinstance(given, int) and not isinstance(given, bool) and given not in RANDOM_SEEDS:
        any_seed = given
    key = image_key(any_seed, f"{model_id}\n{_canonical(model_input)}")
    return Generation((ImageSpec(key, *GENERIC_SIZE),), any_seed)


def invalid_json(message: str, position: int) -> Failure:
    """A body that is not JSON fails as FastAPI fails it: a 422 at the decoding position."""
    return validation_failure(
        [
            {
                "type": "json_invalid",
                "loc": ["body", position],
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": message},
            }
        ]
    )


def _fastapi_errors(exc: ValidationError) -> list[dict[str, Any]]:
    # exc.json() makes `ctx` and `input` JSON-safe; FastAPI prefixes body fields with "body".
    errors: list[dict[str, Any]] = json.loads(exc.json(include_url=False))
    for error in errors:
        error["loc"] = ["body", *error["loc"]]
    return errors


def _canonical(value: Any) -> str:
    # json, not orjson: model input may hold integers beyond 64 bits.
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
