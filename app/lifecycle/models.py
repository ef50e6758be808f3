"""The outbox of files to delete, and the index retention reads jobs off."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Index, Integer, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, CreatedAtMixin
from app.jobs.models import Job


class FileDeletion(CreatedAtMixin, Base):
    """An object key whose job is gone and whose bytes are still in the store (or may be).

    Written in the transaction that deletes the job, removed once the store said the object is
    deleted: a failed delete, or a process that died between the commit and the store call,
    leaves the key here to be retried, never an orphan in the bucket."""

    __tablename__ = "file_deletions"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    # When it is next tried. Also the lease: whoever takes it moves it into the future, so two
    # replicas never delete the same key at once, and a crash only delays it.
    due_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()"), nullable=False
    )
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_file_deletions_due_at", "due_at"),)


# Retention's scan: finished jobs, oldest completion first. Partial, so it holds only finished
# jobs and intake's inserts (queued) never touch it. Declared here, beside its only reader.
Index(
    "ix_jobs_finished_completed",
    Job.completed_at,
    postgresql_where=text("status IN ('succeeded', 'failed', 'canceled')"),
)
