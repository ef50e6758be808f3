"""Thumbnails: small WebPs of images, None for what is not one, and a bounded decode."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from app.storage.thumbnails import MAX_PIXELS, thumbnail


def opened(data: bytes | None) -> Image.Image:
    assert data is not None
    image = Image.open(io.BytesIO(data))
    assert image.format == "WEBP"
    return image


def test_a_png_becomes_a_small_webp(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    halves = Image.new("RGB", (2048, 1152), (200, 30, 30))
    halves.paste((20, 20, 220), (1024, 0, 2048, 1152))  # right half blue
    noise = Image.effect_noise((2048, 1152), 60).convert("RGB")
    Image.blend(halves, noise, 0.15).save(path)  # grain: a PNG of megabytes, like a 2K output
    data = thumbnail(path)
    image = opened(data)
    assert image.size == (384, 216)  # the long side 384, the shape kept
    assert path.stat().st_size > 1_000_000
    assert len(data or b"") < 64_000
    rgb = image.convert("RGB")
    left, right = rgb.getpixel((50, 100)), rgb.getpixel((330, 100))
    assert isinstance(left, tuple)
    assert isinstance(right, tuple)
    assert left[0] > 150 > left[2]  # what was left is left
    assert right[2] > 150 > right[0]


def test_transparency_is_kept_and_small_images_are_not_enlarged(tmp_path: Path) -> None:
    path = tmp_path / "icon.png"
    Image.new("RGBA", (100, 60), (0, 255, 0, 0)).save(path)
    image = opened(thumbnail(path, max_side=384))
    assert (image.size, image.mode) == ((100, 60), "RGBA")
    assert image.getpixel((5, 5))[3] == 0


def test_a_jpeg_is_decoded_in_draft_and_turned_upright(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to view
    Image.new("RGB", (4000, 3000), (10, 120, 10)).save(path, exif=exif)
    image = opened(thumbnail(path))
    assert image.size == (288, 384)  # stored landscape, shown portrait


@pytest.mark.parametrize(
    "content", [b"", b"not an image at all", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100]
)
def test_what_is_not_an_image_has_no_thumbnail(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(content)
    assert thumbnail(path) is None


def test_a_truncated_image_has_no_thumbnail(tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    Image.effect_noise((512, 512), 64).convert("RGB").save(path)
    path.write_bytes(path.read_bytes()[:2000])
    assert thumbnail(path) is None


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height and holds almost no data: what a decompression bomb
    looks like to the header reader."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("width", "height"),
    [(8192, 4097), (12_000, 12_000), (100_000, 100_000)],  # above ours; above Pillow's, twice
)
def test_a_huge_image_is_refused_before_decoding(tmp_path: Path, width: int, height: int) -> None:
    assert width * height > MAX_PIXELS
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(width, height))
    assert thumbnail(path) is None
