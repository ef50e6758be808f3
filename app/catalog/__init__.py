"""The fal models falrelay runs: one registry entry per model.

Adding a model is an entry here (its input and output schemas), not a change to the job flow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from app.catalog import imagineart
from app.catalog.pricing import PriceRule


@dataclass(frozen=True, slots=True)
class ModelSpec:
    id: str
    title: str
    description: str
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    price: PriceRule

    def normalise_input(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The input as fal will receive it: validated, defaults filled in.

        Raises pydantic's `ValidationError` for input the model would refuse.
        """
        return self.input_model.model_validate(raw).model_dump(mode="json", exclude_none=True)


MODELS: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in (
        ModelSpec(
            id=imagineart.MODEL_ID,
            title="ImagineArt 2.0 (preview), text to image",
            description=imagineart.DESCRIPTION,
            input_model=imagineart.ImagineArt2Input,
            output_model=imagineart.ImagineArt2Output,
            price=imagineart.PRICE,
        ),
    )
}
DEFAULT_MODEL_ID = imagineart.MODEL_ID


def describe_models() -> list[dict[str, Any]]:
    return [
        {
            "id": spec.id,
            "title": spec.title,
            "description": spec.description,
            "input_schema": spec.input_model.model_json_schema(),
            "output_schema": spec.output_model.model_json_schema(),
        }
        for spec in MODELS.values()
    ]


__all__ = ["DEFAULT_MODEL_ID", "MODELS", "ModelSpec", "ValidationError", "describe_models"]
