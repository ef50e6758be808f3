from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, CreatedAtMixin


class Model(CreatedAtMixin, Base):
    """A fal model imported into the catalog (`falrelay models import`); the shipped ones are
    files in `app/catalog/entries/`. `document` is the catalog entry, as `GET /v1/models`
    serves it."""

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
