"""The `s3://bucket/prefix` store: any S3-compatible service (AWS, R2, MinIO, moto...), through
obstore (the Rust object_store crate, async).

Why obstore and not aiobotocore (bench/README.md, "Object stores", measured against moto on
loopback in one run): it streams an async iterator into a multipart upload by itself, where
aiobotocore leaves the part loop, its concurrency and the abort to us; it presigns in
microseconds without an HTTP client; and it imports in a few milliseconds with no botocore
service models to load, at a fraction of aiobotocore's resident memory.

Credentials and region come from the standard variables (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION...), which obstore reads itself;
FALRELAY_S3_ENDPOINT_URL points it at a store other than AWS (path-style requests).

A multipart put that fails is aborted by obstore; one that is cancelled (a shutdown mid-copy)
is not, and its parts stay in the bucket, invisible, until removed. Give the bucket a
lifecycle rule that aborts incomplete multipart uploads after a day.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import quote

import obstore
from obstore.store import S3Store

from app.storage.errors import ObjectNotFound
from app.storage.keys import check_key
from app.storage.location import S3Location

if TYPE_CHECKING:
    from obstore.store import ClientConfig

# A body up to this size is sent in one PUT; a larger one as a multipart upload of parts this
# size (S3's minimum part is 5 MiB). What a put holds is about (PARTS_IN_FLIGHT + 1) parts,
# whatever the file's size: with 50 mirrors at once, 50 x 15 MiB at most.
PART_BYTES = 5 * 1024 * 1024
PARTS_IN_FLIGHT = 2
CONNECT_TIMEOUT = timedelta(seconds=5)
# Per request (one part, or a whole small object): 5 MiB in 2 minutes is 44 KB/s.
REQUEST_TIMEOUT = timedelta(seconds=120)


class S3ObjectStore:
    def __init__(
        self, store: S3Store, *, url_ttl_seconds: int, public_url: str | None = None
    ) -> None:
        self._store = store
        self._ttl = timedelta(seconds=url_ttl_seconds)
        self._public_url = public_url.rstrip("/") if public_url else None

    @classmethod
    def open(
        cls,
        location: S3Location,
        *,
        endpoint_url: str | None,
        url_ttl_seconds: int,
        public_url: str | None,
    ) -> S3ObjectStore:
        options: ClientConfig = {"connect_timeout": CONNECT_TIMEOUT, "timeout": REQUEST_TIMEOUT}
        if endpoint_url is not None:
            options["allow_http"] = endpoint_url.startswith("http://")
            store = S3Store(
                location.bucket,
                prefix=location.prefix,
                endpoint=endpoint_url,
                client_options=options,
            )
        else:
            store = S3Store(location.bucket, prefix=location.prefix, client_options=options)
        return cls(store, url_ttl_seconds=url_ttl_seconds, public_url=public_url)

    async def put(self, key: str, chunks: AsyncIterable[bytes], *, content_type: str) -> int:
        check_key(key)
        attributes = {"Content-Type": content_type}
        iterator = aiter(chunks)
        # Up to one part is held to decide: a small body goes in one request, not three.
        head: list[bytes] = []
        size = 0
        while size <= PART_BYTES:
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                body = b"".join(head)
                await obstore.put_async(
                    self._store, key, body, attributes=attributes, use_multipart=False
                )
                return size
            head.append(chunk)
            size += len(chunk)
        counted = _Counted(head, iterator, size)
        await obstore.put_async(
            self._store,
            key,
            counted,
            attributes=attributes,
            chunk_size=PART_BYTES,
            max_concurrency=PARTS_IN_FLIGHT,
        )
        return counted.size

    async def put_bytes(self, key: str, data: bytes, *, content_type: str) -> None:
        check_key(key)
        await obstore.put_async(
            self._store,
            key,
            data,
            attributes={"Content-Type": content_type},
            use_multipart=len(data) > PART_BYTES,
            chunk_size=PART_BYTES,
            max_concurrency=PARTS_IN_FLIGHT,
        )

    async def read(self, key: str) -> bytes:
        check_key(key)
        try:
            result = await obstore.get_async(self._store, key)
            return (await result.bytes_async()).to_bytes()
        except FileNotFoundError:  # obstore's NotFoundError
            raise ObjectNotFound(key) from None

    async def delete(self, keys: Sequence[str]) -> None:
        # One DeleteObjects request per 1,000 keys; a missing key is no error in S3.
        for key in keys:
            check_key(key)
        if keys:
            await obstore.delete_async(self._store, list(keys))

    def url(self, key: str) -> str:
        check_key(key)
        if self._public_url is not None:
            return f"{self._public_url}/{quote(key, safe='/')}"
        # A local computation (SigV4 with the credentials obstore holds), no request.
        return obstore.sign(self._store, "GET", key, self._ttl)

    async def aclose(self) -> None:
        return None  # obstore's client is dropped with the store


class _Counted:
    """The held head of a body, then the rest of it, counting the bytes that pass."""

    def __init__(self, head: list[bytes], rest: AsyncIterator[bytes], size: int) -> None:
        self._head = head
        self._rest = rest
        self.size = size

    def __aiter__(self) -> _Counted:
        return self

    async def __anext__(self) -> bytes:
        if self._head:
            return self._head.pop(0)
        chunk = await anext(self._rest)
        self.size += len(chunk)
        return chunk
