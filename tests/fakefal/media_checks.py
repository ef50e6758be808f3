"""Reading the fake's files as a client would: PNG headers, ffmpeg's decoder (PyAV), `wave`."""

from __future__ import annotations

import io
import struct
import wave
import zlib
from typing import Any

import av
import httpx
import pytest


def decode(data: bytes) -> tuple[int, int, float, list[av.VideoFrame]]:
    """(width, height, seconds, frames) as ffmpeg's decoder reads the file."""
    with av.open(io.BytesIO(data), "r") as container:
        [stream] = container.streams.video
        assert stream.codec_context.name == "h264"
        assert stream.duration is not None
        assert stream.time_base is not None
        seconds = float(stream.duration * stream.time_base)
        frames = list(container.decode(stream))
        return stream.codec_context.width, stream.codec_context.height, seconds, frames


def plane_values(frame: av.VideoFrame, index: int) -> set[int]:
    """The distinct sample values of one plane, padding left out."""
    plane = frame.planes[index]
    width = frame.width if index == 0 else frame.width // 2
    height = frame.height if index == 0 else frame.height // 2
    data = bytes(plane)
    return {
        value
        for row in range(height)
        for value in data[row * plane.line_size : row * plane.line_size + width]
    }


def png_dimensions(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, its CRC checked."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR")
    (crc,) = struct.unpack(">I", data[29:33])
    assert zlib.crc32(data[12:29]) == crc
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as reader:
        assert reader.getnframes() > 0
        return float(reader.getnframes() / reader.getframerate())


async def check_file(http: httpx.AsyncClient, listed: dict[str, Any]) -> bytes:
    """Download one file a job lists (`{url, kind, content_type, width, height, duration,
    file_size}`) and check it is what the output says it is."""
    response = await http.get(listed["url"])
    assert response.status_code == 200, listed["url"]
    data = response.content
    if listed.get("content_type"):
        assert response.headers["content-type"].startswith(listed["content_type"])
    if listed.get("file_size") is not None:
        assert len(data) == listed["file_size"]
    kind = listed["kind"]
    if kind == "image":
        width, height = png_dimensions(data)
    elif kind == "video":
        width, height, seconds, frames = decode(data)
        assert frames, "no decodable frame"
        if listed.get("duration") is not None:
            assert seconds == pytest.approx(listed["duration"], abs=0.05)
    elif kind == "audio":
        seconds = wav_seconds(data)
        if listed.get("duration") is not None:
            assert seconds == pytest.approx(listed["duration"], abs=0.01)
    if kind in ("image", "video"):
        if listed.get("width") is not None:
            assert width == listed["width"]
        if listed.get("height") is not None:
            assert height == listed["height"]
    return data
