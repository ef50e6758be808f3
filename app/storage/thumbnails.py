"""Console thumbnails, made once when a file is mirrored: a WebP of at most 384 px a side.

Decoding is bounded. Pillow reads only the header on open, so an image whose header claims
more than MAX_PIXELS is refused before any pixel is decoded (Pillow itself refuses past twice
its MAX_IMAGE_PIXELS, with DecompressionBombError, even earlier); JPEGs are decoded in draft
mode, at the smallest power-of-two scale that still covers the thumbnail. So a hostile file
costs at most about MAX_PIXELS x 4 bytes (a 4096 x 8192 image, 128 MiB), whatever it claims.
No global setting of Pillow's is changed: the process may decode other images for others.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

# Twice a 4K square: every image a generation model makes today, with room.
MAX_PIXELS = 2 * 4096 * 4096
QUALITY = 80


def thumbnail(path: Path, max_side: int = 384) -> bytes | None:
    """A WebP thumbnail of the image at `path`; None for anything Pillow cannot open (a video,
    a truncated or hostile image). Blocking: call it in a thread."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_PIXELS or width < 1 or height < 1:
                return None
            image.draft("RGB", (max_side, max_side))
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            # Phone photos are stored sideways with an EXIF note; the thumbnail is upright.
            upright = ImageOps.exif_transpose(image)
            has_alpha = upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info
            converted = upright.convert("RGBA" if has_alpha else "RGB")
            out = io.BytesIO()
            converted.save(out, "WEBP", quality=QUALITY, method=4)
            return out.getvalue()
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,  # where warnings are errors
        OSError,  # truncated or corrupt data
        ValueError,
        SyntaxError,  # some of Pillow's parsers raise it for malformed headers
        EOFError,
    ):
        return None
