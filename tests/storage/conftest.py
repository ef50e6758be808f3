"""The stores under test: a directory, and a bucket on a `moto_server` the session starts."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.db.pool import Pool
from app.main import create_app
from app.settings import Settings
from app.storage import ObjectStore, open_store
from app.storage.filesystem import FileStore
from app.storage.s3 import S3ObjectStore
from tests.moto import BUCKET, MotoServer
from tests.servers import LiveServer


@pytest.fixture
async def s3_store(moto: MotoServer, database_url: str, pool: Pool) -> AsyncIterator[S3ObjectStore]:
    # A prefix per test: tests share the bucket, never each other's objects.
    settings = Settings(
        database_url=database_url,
        storage_url=f"s3://{BUCKET}/t-{secrets.token_hex(4)}",
        s3_endpoint_url=moto.url,
        storage_url_ttl_seconds=600,
    )
    store = await open_store(settings, pool)
    assert isinstance(store, S3ObjectStore)
    yield store
    await store.aclose()


@pytest.fixture
async def file_store(tmp_path: Path, database_url: str, pool: Pool) -> AsyncIterator[FileStore]:
    settings = Settings(database_url=database_url, storage_url=(tmp_path / "files").as_uri())
    store = await open_store(settings, pool)
    assert isinstance(store, FileStore)
    yield store
    await store.aclose()


@dataclass
class Served:
    """falrelay serving a file:// store over real HTTP, and the same store as the test sees it
    (opened on its own from the same database, as another replica would)."""

    url: str
    store: FileStore
    settings: Settings


@pytest.fixture(scope="module")
async def served(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, pool: Pool
) -> AsyncIterator[Served]:
    root = tmp_path_factory.mktemp("served") / "files"
    settings = Settings(
        database_url=database_url, storage_url=root.as_uri(), storage_url_ttl_seconds=3600
    )
    store = await open_store(settings, pool)
    assert isinstance(store, FileStore)
    with LiveServer(create_app(settings)) as server:
        yield Served(server.url, store, settings)


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    """Each store in turn, for what both must do alike."""
    chosen: ObjectStore = request.getfixturevalue(f"{request.param}_store")
    return chosen
