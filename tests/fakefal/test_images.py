"""Image sizes and the pure-Python PNG: exact ratios, valid files, sizes known in advance."""

from __future__ import annotations

import struct
import zlib

import pytest

from app.fakefal.images import ImageSpec, image_key
from app.fakefal.sizes import image_size

PUBLISHED_2K = {
    "1:1": (2048, 2048),
    "16:9": (2816, 1584),
    "9:16": (1584, 2816),
    "4:3": (2368, 1776),
    "3:4": (1776, 2368),
    "3:1": (3552, 1184),
    "1:3": (1184, 3552),
    "3:2": (2496, 1664),
    "2:3": (1664, 2496),
    "5:4": (2320, 1856),
    "4:5": (1856, 2320),
    "21:9": (3136, 1344),
}
ALL_RATIOS = [*PUBLISHED_2K, "4:1", "1:4"]


@pytest.mark.parametrize(("ratio", "size"), PUBLISHED_2K.items())
def test_2k_sizes_are_the_published_ones(ratio: str, size: tuple[int, int]) -> None:
    assert image_size(ratio, "2K") == size


@pytest.mark.parametrize("resolution", ["1K", "2K"])
@pytest.mark.parametrize("ratio", ALL_RATIOS)
def test_sizes_are_multiples_of_16_in_the_exact_ratio(ratio: str, resolution: str) -> None:
    width, height = image_size(ratio, resolution)
    w, h = map(int, ratio.split(":"))
    assert width % 16 == 0
    assert height % 16 == 0
    assert width * h == height * w
    target = 1024**2 if resolution == "1K" else 2048**2
    # No other exact-ratio multiple of 16 is closer to the target area.
    for other in (width - 16, width + 16):
        if other > 0 and (other * h) % w == 0 and (other * h // w) % 16 == 0:
            assert abs(width * height - target) <= abs(other * (other * h // w) - target)


def test_1k_square_is_1024() -> None:
    assert image_size("1:1", "1K") == (1024, 1024)


def read_png(data: bytes) -> tuple[int, int, bytes]:
    """Walk the chunks, checking every CRC; (width, height, decompressed scanlines)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, idat, kinds = 8, b"", []
    width = height = 0
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        payload = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(kind + payload) == crc
        kinds.append(kind)
        if kind == b"IHDR":
            width, height, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", payload)
            assert (depth, colour) == (8, 2)
        elif kind == b"IDAT":
            idat += payload
        offset += 12 + length
    assert kinds[0] == b"IHDR"
    assert kinds[-1] == b"IEND"
    # zlib.decompress checks the adler32 too.
    return width, height, zlib.decompress(idat)


@pytest.mark.parametrize(("width", "height"), [(2048, 2048), (3552, 1184), (1, 1), (17, 5)])
def test_png_is_valid_and_its_size_is_known_before_rendering(width: int, height: int) -> None:
    spec = ImageSpec(image_key(42, "a fox"), width, height)
    data = spec.render()
    assert len(data) == spec.file_size()
    w, h, raw = read_png(data)
    assert (w, h) == (width, height)
    assert len(raw) == (3 * width + 1) * height


def test_same_key_same_bytes_other_key_other_bytes() -> None:
    one = ImageSpec(image_key(7, "x"), 1024, 1024)
    assert one.render() == ImageSpec(image_key(7, "x"), 1024, 1024).render()
    assert one.render() != ImageSpec(image_key(8, "x"), 1024, 1024).render()
    assert one.render() != ImageSpec(image_key(7, "y"), 1024, 1024).render()


def test_file_names_round_trip_and_refuse_nonsense() -> None:
    spec = ImageSpec(0xDEADBEEF, 2816, 1584)
    assert ImageSpec.from_file_name(spec.file_name) == spec
    for name in ["x.png", "00000000deadbeef-99999x1.png", "00000000deadbeef-0x1.png", "../etc"]:
        assert ImageSpec.from_file_name(name) is None
