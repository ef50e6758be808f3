"""A pure-Python PNG encoder (zlib + struct) for pictures made of horizontal bands.

Each band is one RGB scanline repeated. Its first scanline goes into the deflate stream as a
stored block (5 bytes + the line); the others use PNG's "Up" filter, which turns a repeated
line into zero bytes whatever its colours, so their compressed form depends only on the width
and is computed once. Hence a file's exact size is arithmetic (no pixels needed) and a 2048x2048
image is a few dozen KB put together in milliseconds.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A stored deflate block holds at most 65535 bytes: one scanline with its filter byte.
MAX_WIDTH = (0xFFFF - 1) // 3
_ZLIB_HEADER = b"\x78\x01"
# The last deflate block: fixed Huffman codes, BFINAL set, nothing but end-of-block.
_FINAL_BLOCK = b"\x03\x00"
_STORED_HEADER = 5
_REPEAT_CHUNK = 64
_ADLER_MOD = 65521
_FILTER_NONE = b"\x00"
_FILTER_UP = b"\x02"


@dataclass(frozen=True, slots=True)
class Band:
    line: bytes  # width * 3 bytes, RGB
    rows: int


def png_size(width: int, band_rows: Sequence[int]) -> int:
    """The length of `encode_png`'s output for bands of these heights, without encoding."""
    deflate = sum(_band_size(width, rows) for rows in band_rows)
    idat = len(_ZLIB_HEADER) + deflate + len(_FINAL_BLOCK) + 4
    return len(SIGNATURE) + (12 + 13) + (12 + idat) + 12


@lru_cache(maxsize=4096)
def _band_size(width: int, rows: int) -> int:
    """A band's bytes in the deflate stream: its stored first line, then its repeats. A
    function of two small numbers, asked for every file an output names."""
    return _STORED_HEADER + 1 + 3 * width + sum(len(piece) for piece, _, _ in _repeats(width, rows))


def encode_png(width: int, bands: Sequence[Band]) -> bytes:
    if not 0 < width <= MAX_WIDTH:
        raise ValueError(f"width must be 1..{MAX_WIDTH}")
    height = sum(band.rows for band in bands)
    parts = [_ZLIB_HEADER]
    adler = 1
    for band in bands:
        if len(band.line) != 3 * width or band.rows < 1:
            raise ValueError("each band needs one RGB line of the image's width and rows >= 1")
        line = _FILTER_NONE + band.line
        parts.append(b"\x00" + struct.pack("<HH", len(line), len(line) ^ 0xFFFF) + line)
        adler = zlib.adler32(line, adler)
        for piece, piece_adler, raw_length in _repeats(width, band.rows):
            parts.append(piece)
            adler = _adler32_combine(adler, piece_adler, raw_length)
    parts += [_FINAL_BLOCK, struct.pack(">I", adler)]
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"".join(
        [SIGNATURE, _chunk(b"IHDR", header), _chunk(b"IDAT", b"".join(parts)), _chunk(b"IEND", b"")]
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return b"".join(
        [struct.pack(">I", len(data)), kind, data, struct.pack(">I", zlib.crc32(kind + data))]
    )


def _repeats(width: int, band_rows: int) -> Iterator[tuple[bytes, int, int]]:
    """The deflate pieces for a band's rows after its first: (bytes, adler32, raw length)."""
    full, rest = divmod(band_rows - 1, _REPEAT_CHUNK)
    for _ in range(full):
        yield _repeated_rows(width, _REPEAT_CHUNK)
    # The remainder in powers of two: at most 7 distinct pieces per width ever get compressed.
    chunk = _REPEAT_CHUNK // 2
    while rest:
        if rest >= chunk:
            yield _repeated_rows(width, chunk)
            rest -= chunk
        chunk //= 2


@lru_cache(maxsize=256)
def _repeated_rows(width: int, rows: int) -> tuple[bytes, int, int]:
    raw = (_FILTER_UP + bytes(3 * width)) * rows
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    # A sync flush ends the piece on a byte boundary, and a fresh compressor refers to nothing
    # before it: pieces from separate compressors concatenate into one valid deflate stream.
    piece = compressor.compress(raw) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return piece, zlib.adler32(raw), len(raw)


def _adler32_combine(adler1: int, adler2: int, length2: int) -> int:
    """zlib's adler32_combine: the checksum of A + B from A's, B's and B's length."""
    rem = length2 % _ADLER_MOD
    sum1 = adler1 & 0xFFFF
    sum2 = (rem * sum1) % _ADLER_MOD
    sum1 = (sum1 + (adler2 & 0xFFFF) + _ADLER_MOD - 1) % _ADLER_MOD
    sum2 = (sum2 + (adler1 >> 16) + (adler2 >> 16) + _ADLER_MOD - rem) % _ADLER_MOD
    return sum1 | (sum2 << 16)
