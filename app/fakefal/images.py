"""The fake's generated images: what a file name stands for, and the bounded cache of renders.

A file name carries everything needed to draw the picture (`{key:016x}-{width}x{height}.png`),
so `/files/{name}` works statelessly: after a reset, a restart, or on another fake instance.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar, Literal

from app.fakefal.png import Band, encode_png, png_size

MAX_SIDE = 4096
_NAME = re.compile(r"^([0-9a-f]{16})-([1-9][0-9]{0,4})x([1-9][0-9]{0,4})\.png$")
_GRADIENT_STEPS = 32


def image_key(seed: int, payload: str) -> int:
    """A 64-bit key for the picture: the same seed and input always give the same image."""
    digest = hashlib.sha256(f"{seed}\n{payload}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


@dataclass(frozen=True, slots=True)
class ImageSpec:
    key: int
    width: int
    height: int
    kind: ClassVar[Literal["image"]] = "image"
    content_type: ClassVar[str] = "image/png"

    @property
    def file_name(self) -> str:
        return f"{self.key:016x}-{self.width}x{self.height}.png"

    @classmethod
    def from_file_name(cls, name: str) -> ImageSpec | None:
        match = _NAME.match(name)
        if match is None:
            return None
        width, height = int(match[2]), int(match[3])
        if width > MAX_SIDE or height > MAX_SIDE:
            return None
        return cls(int(match[1], 16), width, height)

    def file_size(self) -> int:
        return png_size(self.width, self._band_rows(random.Random(self.key)))

    def render(self) -> bytes:
        rng = random.Random(self.key)
        rows = self._band_rows(rng)
        return encode_png(self.width, [Band(self._gradient_line(rng), n) for n in rows])

    def _band_rows(self, rng: random.Random) -> list[int]:
        """Heights of the horizontal bands; `rng` goes on to pick their colours."""
        count = min(rng.randint(6, 18), self.height)
        cuts = sorted(rng.sample(range(1, self.height), count - 1)) if count > 1 else []
        edges = [0, *cuts, self.height]
        return [bottom - top for top, bottom in itertools.pairwise(edges)]

    def _gradient_line(self, rng: random.Random) -> bytes:
        start = [rng.randrange(256) for _ in range(3)]
        end = [rng.randrange(256) for _ in range(3)]
        block = -(-self.width // _GRADIENT_STEPS)
        line = b"".join(
            bytes(
                a + (b - a) * step // (_GRADIENT_STEPS - 1) for a, b in zip(start, end, strict=True)
            )
            * block
            for step in range(_GRADIENT_STEPS)
        )
        return line[: 3 * self.width]


class RenderCache:
    """Rendered files by name, least recently used evicted past `max_bytes`."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._files: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0

    def get(self, name: str) -> bytes | None:
        data = self._files.get(name)
        if data is not None:
            self._files.move_to_end(name)
        return data

    def put(self, name: str, data: bytes) -> None:
        old = self._files.pop(name, None)
        if old is not None:
            self._size -= len(old)
        self._files[name] = data
        self._size += len(data)
        while self._size > self.max_bytes and len(self._files) > 1:
            _, evicted = self._files.popitem(last=False)
            self._size -= len(evicted)

    def clear(self) -> None:
        self._files.clear()
        self._size = 0
