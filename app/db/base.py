"""The schema's declarative base: the models are the source Alembic checks migrations against.

Request paths do not go through the ORM (see `app.db.pool`); the models describe the tables,
their constraints and indexes, so that `alembic check` catches a migration that drifted.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, MetaData, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class CreatedAtMixin:
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


def import_models() -> MetaData:
    """Import every model module so that `Base.metadata` holds the whole schema."""
    from app.auth import models as _auth  # noqa: F401
    from app.billing import models as _billing  # noqa: F401
    from app.catalog import models as _catalog  # noqa: F401
    from app.console import models as _console  # noqa: F401
    from app.events import models as _events  # noqa: F401
    from app.fal import models as _fal  # noqa: F401
    from app.jobs import models as _jobs  # noqa: F401
    from app.lifecycle import models as _lifecycle  # noqa: F401
    from app.webhooks import models as _webhooks  # noqa: F401

    return Base.metadata
