"""Our URLs for stored files, as job views write them.

A job view is built on every read path and in every event (`app.jobs.schemas.job_view`), with
no I/O: the process's store is set here once when it starts, and a URL is a signature computed
in place (the file store's HMAC, or the bucket's presigned URL). A process with no store names
the key unsigned, which nothing serves: every process of a deployment needs the same
FALRELAY_STORAGE_URL.
"""

from __future__ import annotations

from app.storage import ObjectStore

_store: ObjectStore | None = None


def configure(store: ObjectStore | None) -> None:
    global _store
    _store = store


def url(key: str) -> str:
    if _store is None:
        return f"/files/{key}"
    return _store.url(key)
