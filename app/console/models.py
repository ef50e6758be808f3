"""The console's sessions: what its cookie stands for, kept server-side."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, LargeBinary
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, CreatedAtMixin


class ConsoleSession(CreatedAtMixin, Base):
    """A signed-in browser. The cookie holds a random token, never the API key; this row holds
    only the token's SHA-256, so a copy of the table signs no one in. A session is only as good
    as its key: it ends with the key's revocation (checked on every request) or deletion."""

    __tablename__ = "console_sessions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    # SHA-256 of the cookie's 256 random bits: a slow hash would buy nothing.
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True, nullable=False)
    # Indexed: the cascade from a deleted key finds its sessions without a scan.
    api_key_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), index=True, nullable=False
    )
    # Indexed: expired sessions are deleted in batches, oldest first.
    expires_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), index=True, nullable=False
    )
