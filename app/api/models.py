from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.responses import Response

from app.api.deps import PrincipalDep
from app.api.responses import JSONBytes
from app.catalog import describe_models
from app.errors import Unauthorized, error_responses

router = APIRouter(prefix="/v1/models", tags=["models"])


class ModelRead(BaseModel):
    id: str
    title: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]


class ModelList(BaseModel):
    data: list[ModelRead]


@router.get("", response_model=ModelList, responses=error_responses(Unauthorized))
async def list_models(principal: PrincipalDep) -> Response:
    """The models jobs can run, with the JSON schema of their input and output."""
    return JSONBytes({"data": describe_models()})
