"""Bodies to stream and a way to see what streaming them cost in memory."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1024 * 1024
CHUNK = 64 * 1024


@dataclass
class Body:
    """`size` bytes in 64 KiB chunks, made as they are asked for (the test never holds them),
    with their SHA-256 once sent."""

    size: int
    fail_after: int | None = None  # raise after this many bytes, as a dropped download would
    sha256: hashlib._Hash = field(default_factory=hashlib.sha256)

    async def chunks(self) -> AsyncIterator[bytes]:
        sent = 0
        counter = 0
        while sent < self.size:
            if self.fail_after is not None and sent >= self.fail_after:
                raise ConnectionResetError("the source went away")
            counter += 1
            # Distinct content per chunk, so a dropped or repeated chunk changes the hash.
            seed = hashlib.sha256(counter.to_bytes(8, "big")).digest()
            chunk = (seed * (CHUNK // len(seed)))[: min(CHUNK, self.size - sent)]
            self.sha256.update(chunk)
            sent += len(chunk)
            yield chunk
            await asyncio.sleep(0)

    def hexdigest(self) -> str:
        return self.sha256.hexdigest()


def _status_kib(name: str) -> int:
    match = re.search(rf"^{name}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    assert match, name
    return int(match.group(1))


@dataclass
class Growth:
    mib: float = 0.0


@contextmanager
def peak_rss_growth() -> Iterator[Growth]:
    """How far this process's peak RSS rose above its RSS at the start of the block (Linux:
    the high-water mark is reset through /proc/self/clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")
    start = _status_kib("VmRSS")
    growth = Growth()
    yield growth
    growth.mib = (_status_kib("VmHWM") - start) / 1024


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(MIB):
            digest.update(block)
    return digest.hexdigest()
