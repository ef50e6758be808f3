from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.responses import Response

from app.api.deps import PrincipalDep, RuntimeDep
from app.api.problems import error_responses
from app.api.responses import JSONBytes
from app.catalog import CATALOG
from app.errors import Unauthorized

router = APIRouter(prefix="/v1/models", tags=["models"])


class ModelPrice(BaseModel):
    unit: Literal["image", "megapixel", "second"] = Field(
        description="What fal bills: per image, per million output pixels, or per second of output."
    )
    unit_price_usd: str | None = Field(
        default=None, description="Dollars per unit, as a decimal string."
    )
    by_resolution: dict[str, str] | None = Field(
        default=None, description="Per-image models priced by the input's `resolution`."
    )
    typical_units: str = Field(description="Units a job with default input uses.")


class ModelRead(BaseModel):
    id: str
    title: str
    description: str
    category: str = Field(examples=["text-to-image"])
    source: list[str] = Field(description="fal's pages the entry was taken from.")
    price: ModelPrice
    typical_seconds: float = Field(description="Typical run time at fal.")
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]


class ModelList(BaseModel):
    data: list[ModelRead]


@router.get("", response_model=ModelList, responses=error_responses(Unauthorized))
async def list_models(principal: PrincipalDep, runtime: RuntimeDep) -> Response:
    """The models jobs can run, with the JSON schema of their input and output and their price."""
    # Read afresh (one small query, off the hot path): an import is listed at once.
    await CATALOG.refresh(runtime.pool)
    return JSONBytes({"data": [spec.document() for spec in CATALOG.models()]})
