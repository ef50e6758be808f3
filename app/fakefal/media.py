"""The fake's generated files of every kind, each named by what it takes to make it again.

Like an image's (images.py), a video's, a sound's or another file's name carries all it is made
from, so `/files/{name}` serves it statelessly: after a reset, a restart or on another instance.

- video: `{key:016x}-{width}x{height}-{fps}fps-{frames}f.mp4`, an H.264 MP4 (mp4.py);
- audio: `{key:016x}-{rate}hz-{milliseconds}ms.wav`, a 16-bit mono tone;
- other: `{key:016x}.{ext}`, a few lines of text or bytes with the extension's media type.
"""

from __future__ import annotations

import io
import math
import random
import re
import struct
import wave
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar, Literal, Protocol

from app.fakefal.images import ImageSpec
from app.fakefal.mp4 import MAX_HEIGHT, MAX_MACROBLOCKS, MAX_WIDTH, encode_mp4

Kind = Literal["image", "video", "audio", "file"]
MAX_SECONDS = 60
MAX_FPS = 60
MIN_RATE, MAX_RATE = 8000, 48000
_WAV_HEADER = 44
# The other files the fake can name, and what they are served as.
OTHER_TYPES = {
    "bin": "application/octet-stream",
    "txt": "text/plain; charset=utf-8",
    "json": "application/json",
    "srt": "application/x-subrip",
    "vtt": "text/vtt",
    "zip": "application/zip",
    "glb": "model/gltf-binary",
    "obj": "model/obj",
    "pdf": "application/pdf",
}
_TEXT = ("txt", "json", "srt", "vtt", "obj")
_VIDEO = re.compile(
    r"^([0-9a-f]{16})-([1-9][0-9]{0,3})x([1-9][0-9]{0,3})-([1-9][0-9]?)fps-([1-9][0-9]{0,4})f\.mp4$"
)
_AUDIO = re.compile(r"^([0-9a-f]{16})-([1-9][0-9]{3,4})hz-([1-9][0-9]{0,5})ms\.wav$")
_OTHER = re.compile(r"^([0-9a-f]{16})\.([a-z0-9]{1,8})$")


class MediaFile(Protocol):
    """What the output generator and `/files/` need of a generated file."""

    @property
    def kind(self) -> Kind: ...

    @property
    def file_name(self) -> str: ...

    @property
    def content_type(self) -> str: ...

    def file_size(self) -> int: ...

    def render(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class VideoSpec:
    key: int
    width: int
    height: int
    fps: int
    frames: int
    kind: ClassVar[Kind] = "video"
    content_type: ClassVar[str] = "video/mp4"

    @classmethod
    def fitted(cls, key: int, width: int, height: int, fps: int, seconds: float) -> VideoSpec:
        """A clip as close to the request as the writer allows: even sides, within its
        limits (the ratio kept), 1-60 fps, up to a minute."""
        scale = min(1.0, MAX_WIDTH / width, MAX_HEIGHT / height)
        macroblocks = math.ceil(width * scale / 16) * math.ceil(height * scale / 16)
        if macroblocks > MAX_MACROBLOCKS:
            scale *= math.sqrt(MAX_MACROBLOCKS / macroblocks) * 0.99
        even_width = max(2, int(width * scale) // 2 * 2)
        even_height = max(2, int(height * scale) // 2 * 2)
        fps = min(MAX_FPS, max(1, fps))
        frames = max(1, round(min(MAX_SECONDS, max(0.0, seconds)) * fps))
        return cls(key, even_width, even_height, fps, frames)

    @property
    def duration(self) -> float:
        return self.frames / self.fps

    @property
    def file_name(self) -> str:
        return f"{self.key:016x}-{self.width}x{self.height}-{self.fps}fps-{self.frames}f.mp4"

    @classmethod
    def from_file_name(cls, name: str) -> VideoSpec | None:
        match = _VIDEO.match(name)
        if match is None:
            return None
        spec = cls(int(match[1], 16), *(int(match[n]) for n in range(2, 6)))
        fits = spec.width <= MAX_WIDTH and spec.height <= MAX_HEIGHT and spec.width % 2 == 0
        fits = fits and spec.height % 2 == 0 and spec.fps <= MAX_FPS
        fits = fits and spec.frames <= MAX_SECONDS * spec.fps
        fits = fits and math.ceil(spec.width / 16) * math.ceil(spec.height / 16) <= MAX_MACROBLOCKS
        return spec if fits else None

    def file_size(self) -> int:
        return len(_render_video(self))

    def render(self) -> bytes:
        return _render_video(self)


@lru_cache(maxsize=64)
def _render_video(spec: VideoSpec) -> bytes:
    # Small (kilobytes) and asked for twice (its size for the output, then its bytes).
    colour = [random.Random(spec.key).randrange(256) for _ in range(3)]
    return encode_mp4(spec.width, spec.height, spec.fps, spec.frames, colour)


@dataclass(frozen=True, slots=True)
class AudioSpec:
    key: int
    sample_rate: int
    milliseconds: int
    kind: ClassVar[Kind] = "audio"
    content_type: ClassVar[str] = "audio/wav"

    @classmethod
    def fitted(cls, key: int, sample_rate: int, seconds: float) -> AudioSpec:
        rate = min(MAX_RATE, max(MIN_RATE, sample_rate))
        milliseconds = max(1, round(1000 * min(MAX_SECONDS, max(0.0, seconds))))
        return cls(key, rate, milliseconds)

    @property
    def duration(self) -> float:
        return self.milliseconds / 1000

    @property
    def samples(self) -> int:
        return max(1, self.sample_rate * self.milliseconds // 1000)

    @property
    def file_name(self) -> str:
        return f"{self.key:016x}-{self.sample_rate}hz-{self.milliseconds}ms.wav"

    @classmethod
    def from_file_name(cls, name: str) -> AudioSpec | None:
        match = _AUDIO.match(name)
        if match is None:
            return None
        spec = cls(int(match[1], 16), int(match[2]), int(match[3]))
        fits = MIN_RATE <= spec.sample_rate <= MAX_RATE
        return spec if fits and spec.milliseconds <= 1000 * MAX_SECONDS else None

    def file_size(self) -> int:
        return _WAV_HEADER + 2 * self.samples

    def render(self) -> bytes:
        """A sine tone of a pitch the key picks (one cycle computed, then repeated)."""
        rng = random.Random(self.key)
        period = self.sample_rate // rng.choice((220, 262, 330, 392, 440, 523))
        cycle = struct.pack(
            f"<{period}h",
            *(round(9000 * math.sin(2 * math.pi * n / period)) for n in range(period)),
        )
        whole, part = divmod(self.samples, period)
        frames = cycle * whole + cycle[: 2 * part]
        out = io.BytesIO()
        with wave.open(out, "wb") as writer:
            writer.setnchannels(1)
            writer.setsampwidth(2)
            writer.setframerate(self.sample_rate)
            writer.writeframes(frames)
        return out.getvalue()


@dataclass(frozen=True, slots=True)
class OtherSpec:
    key: int
    extension: str
    kind: ClassVar[Kind] = "file"

    @property
    def content_type(self) -> str:
        return OTHER_TYPES[self.extension]

    @property
    def file_name(self) -> str:
        return f"{self.key:016x}.{self.extension}"

    @classmethod
    def from_file_name(cls, name: str) -> OtherSpec | None:
        match = _OTHER.match(name)
        if match is None or match[2] not in OTHER_TYPES:
            return None
        return cls(int(match[1], 16), match[2])

    def file_size(self) -> int:
        return len(self.render())

    def render(self) -> bytes:
        if self.extension == "json":
            return f'{{"generated_by": "fake fal", "key": "{self.key:016x}"}}\n'.encode()
        if self.extension in _TEXT:
            return f"Generated by the fake fal ({self.key:016x}).\n".encode()
        return random.Random(self.key).randbytes(256)


def file_from_name(name: str) -> MediaFile | None:
    """The generated file a `/files/` name stands for, or None for a name the fake never
    hands out."""
    if name.endswith(".png"):
        return ImageSpec.from_file_name(name)
    if name.endswith(".mp4"):
        return VideoSpec.from_file_name(name)
    if name.endswith(".wav"):
        return AudioSpec.from_file_name(name)
    return OtherSpec.from_file_name(name)
