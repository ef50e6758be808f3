"""The object store falrelay mirrors job outputs into: a directory it serves itself
(`file:///abs/dir`) or an S3-compatible bucket (`s3://bucket/prefix`), chosen by
FALRELAY_STORAGE_URL. Every store streams puts (a file is never held whole), deletes in
batches, and hands out URLs that are signed and expire (or a CDN's, for a bucket behind one).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Sequence
from typing import TYPE_CHECKING, Protocol

from app.storage.errors import ObjectNotFound
from app.storage.keys import InvalidKey, check_key
from app.storage.location import FileLocation, parse_location

if TYPE_CHECKING:
    from app.db.pool import Pool
    from app.settings import Settings

__all__ = ["InvalidKey", "ObjectNotFound", "ObjectStore", "StoreSource", "check_key", "open_store"]


class ObjectStore(Protocol):
    async def put(self, key: str, chunks: AsyncIterable[bytes], *, content_type: str) -> int:
        """Streams the chunks (large bodies as multipart uploads, never held whole) and returns
        the bytes written. The object appears whole or not at all."""
        ...

    async def put_bytes(self, key: str, data: bytes, *, content_type: str) -> None: ...

    async def read(self, key: str) -> bytes:
        """The whole object, for tests and small things. Raises ObjectNotFound."""
        ...

    async def delete(self, keys: Sequence[str]) -> None:
        """Missing keys are no error; many keys go in few requests."""
        ...

    def url(self, key: str) -> str:
        """Our URL for the object: signed, expiring after FALRELAY_STORAGE_URL_TTL_SECONDS (or
        FALRELAY_STORAGE_PUBLIC_URL/key for a bucket behind a CDN)."""
        ...

    async def aclose(self) -> None: ...


async def open_store(settings: Settings, pool: Pool) -> ObjectStore | None:
    """The store FALRELAY_STORAGE_URL names; None when it is unset (no mirroring).

    A `file://` store reads (or makes) its URL-signing secret in `service_secrets`, so the
    database must answer; StoreSource defers that to first use."""
    if not settings.storage_url:
        return None
    location = parse_location(settings.storage_url)
    if isinstance(location, FileLocation):
        from app.storage import file_urls
        from app.storage.filesystem import FileStore

        await asyncio.to_thread(location.root.mkdir, parents=True, exist_ok=True)
        urls = await file_urls.load(
            pool, settings.public_base_url, settings.storage_url_ttl_seconds
        )
        return FileStore(location.root, urls)
    from app.storage.s3 import S3ObjectStore

    return S3ObjectStore.open(
        location,
        endpoint_url=settings.s3_endpoint_url,
        url_ttl_seconds=settings.storage_url_ttl_seconds,
        public_url=settings.storage_public_url,
    )


class StoreSource:
    """Opens the store on first use, so a process starts (and reports unready) while the
    database is down or not yet migrated, as app.fal.callback_urls does for its key."""

    def __init__(self, settings: Settings, pool: Pool) -> None:
        self._settings = settings
        self._pool = pool
        self._store: ObjectStore | None = None
        self._opening = asyncio.Lock()

    @property
    def configured(self) -> bool:
        return bool(self._settings.storage_url)

    async def get(self) -> ObjectStore | None:
        if self._store is None and self.configured:
            async with self._opening:
                if self._store is None:
                    self._store = await open_store(self._settings, self._pool)
        return self._store

    async def aclose(self) -> None:
        if self._store is not None:
            await self._store.aclose()
