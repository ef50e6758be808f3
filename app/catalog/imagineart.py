"""`imagineart/imagineart-2.0-preview/text-to-image`, as fal's model page describes it."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.catalog.pricing import PriceRule, PriceUnit

MODEL_ID = "imagineart/imagineart-2.0-preview/text-to-image"
DESCRIPTION = (
    "ImagineArt 2.0: a visual-reasoning text-to-image model. 1K targets about 1024 px and is "
    "faster; 2K targets about 2048 px."
)
MAX_PROMPT_LENGTH = 4000
# The largest integer every JSON parser holds exactly.
MAX_SEED = 2**53 - 1

AspectRatio = Literal[
    "1:1", "16:9", "9:16", "4:3", "3:4", "3:1", "1:3", "3:2", "2:3", "21:9", "4:5", "5:4", "4:1",
    "1:4",
]  # fmt: skip
Resolution = Literal["1K", "2K"]
# fal's model page: "Your request will cost 1K at $0.03 and 2K at $0.05 per image generation."
PRICE = PriceRule(
    unit=PriceUnit.IMAGE, by_resolution={"1K": Decimal("0.03"), "2K": Decimal("0.05")}
)
Reasoning = Literal["low", "high"]


class ImagineArt2Input(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, title="ImagineArt2Input")

    prompt: str = Field(
        min_length=1, max_length=MAX_PROMPT_LENGTH, description="What the image shows."
    )
    aspect_ratio: AspectRatio = "1:1"
    resolution: Resolution = Field(
        default="2K", description="1K targets about 1024 px; 2K about 2048 px."
    )
    seed: int | None = Field(
        default=None, ge=-1, le=MAX_SEED, description="Same seed, same image; 0 and -1 mean random."
    )
    reasoning: Reasoning = Field(
        default="low", description="high takes longer and reasons more about the prompt."
    )

    @field_validator("prompt")
    @classmethod
    def _prompt_has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must contain more than white space")
        return value


class ImageFile(BaseModel):
    url: str
    content_type: str | None = None
    width: int | None = None
    height: int | None = None
    file_name: str | None = None
    file_size: int | None = None


class ImagineArt2Output(BaseModel):
    model_config = ConfigDict(title="ImagineArt2Output")

    images: list[ImageFile]
