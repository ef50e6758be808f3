"""Pixel sizes for an aspect ratio and a resolution.

The rule: width and height are multiples of 16 in exactly the requested ratio; among those, the
pair whose area is closest to 1024² (`1K`) or 2048² (`2K`). It reproduces every 2K size published
for ImagineArt 2.0 (16:9 is 2816x1584, 4:3 2368x1776, 21:9 3136x1344, ...).

Other models name their sizes in fal's other ways (presets such as `landscape_4_3`, explicit
`{width, height}`, video resolutions such as `720p`): `requested_image_size` and
`requested_video_size` read an input as those models do.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, TypeGuard

TARGET_SIDE = {"1K": 1024, "2K": 2048, "4K": 4096}
MULTIPLE = 16


def parse_ratio(aspect_ratio: str) -> tuple[int, int]:
    """`"16:9"` -> (16, 9), in lowest terms."""
    left, sep, right = aspect_ratio.partition(":")
    if not sep or not left.isdigit() or not right.isdigit() or not int(left) or not int(right):
        raise ValueError(f"not an aspect ratio: {aspect_ratio!r}")
    w, h = int(left), int(right)
    g = math.gcd(w, h)
    return w // g, h // g


def image_size(aspect_ratio: str, resolution: str) -> tuple[int, int]:
    p, q = parse_ratio(aspect_ratio)
    target_area = TARGET_SIDE[resolution] ** 2
    # (p*m, q*m) are the exact-ratio sizes; both sides are multiples of 16 exactly when m is a
    # multiple of `step`.
    step = math.lcm(MULTIPLE // math.gcd(p, MULTIPLE), MULTIPLE // math.gcd(q, MULTIPLE))
    ideal = math.sqrt(target_area / (p * q)) / step
    candidates = {max(1, math.floor(ideal)), max(1, math.ceil(ideal))}
    k = min(candidates, key=lambda c: (abs(p * q * (c * step) ** 2 - target_area), -c))
    return p * k * step, q * k * step


# fal's named image sizes (its `ImageSize` enums).
PRESETS = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
DEFAULT_IMAGE = (1024, 1024)
DEFAULT_VIDEO_SHORT_SIDE = 720
DEFAULT_VIDEO_RATIO = "16:9"
_PIXELS = re.compile(r"^\s*([1-9][0-9]{0,4})\s*[x*]\s*([1-9][0-9]{0,4})\s*$")
_VIDEO_RESOLUTION = re.compile(r"^([1-9][0-9]{2,3})p$")
_VIDEO_K = {"2k": 1440, "4k": 2160}


def requested_image_size(model_input: Mapping[str, Any], max_side: int) -> tuple[int, int]:
    """The size an image model's (validated) input asks for, the way fal's image models read
    it: `image_size` (a preset name, `{width, height}` or `"WxH"`), `width`/`height`, or
    `aspect_ratio` with a `resolution` of 1K/2K/4K. Anything else: 1024x1024. Sides above
    `max_side` are scaled down, the ratio kept."""
    size = _size_value(model_input.get("image_size"))
    if size is None:
        size = _size_value(model_input)
    if size is None:
        size = _size_value(model_input.get("resolution"))
    if size is None and "aspect_ratio" in model_input:
        resolution = str(model_input.get("resolution", "1K")).upper()
        size = image_size(
            _ratio_or_square(model_input["aspect_ratio"]),
            resolution if resolution in TARGET_SIDE else "1K",
        )
    return _within(size or DEFAULT_IMAGE, max_side)


def requested_video_size(model_input: Mapping[str, Any], max_side: int) -> tuple[int, int]:
    """A video model's frame size: `resolution` (`480p`, `720p`, `1080p`, `4k`) as the short
    side of `aspect_ratio`, or `video_size`/`image_size` read as an image's; 1280x720 else."""
    for name in ("video_size", "image_size"):
        size = _size_value(model_input.get(name))
        if size is not None:
            return _within(size, max_side)
    resolution = str(model_input.get("resolution", "")).strip().lower()
    match = _VIDEO_RESOLUTION.match(resolution)
    short = int(match[1]) if match else _VIDEO_K.get(resolution, DEFAULT_VIDEO_SHORT_SIDE)
    ratio = model_input.get("aspect_ratio", DEFAULT_VIDEO_RATIO)
    p, q = parse_ratio(_ratio_or_square(ratio if ratio != "auto" else DEFAULT_VIDEO_RATIO))
    size = (round(short * p / q), short) if p >= q else (short, round(short * q / p))
    return _within(size, max_side)


def _size_value(value: Any) -> tuple[int, int] | None:
    if isinstance(value, str):
        if value in PRESETS:
            return PRESETS[value]
        match = _PIXELS.match(value)
        return (int(match[1]), int(match[2])) if match else None
    if isinstance(value, Mapping):
        width, height = value.get("width"), value.get("height")
        if _positive_int(width) and _positive_int(height):
            return width, height
    return None


def _positive_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _ratio_or_square(value: Any) -> str:
    """An aspect ratio as given, or 1:1 for `auto`, `match_input_image` and the like (the
    fake has not seen the input image)."""
    try:
        parse_ratio(str(value))
    except ValueError:
        return "1:1"
    return str(value)


def _within(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    width, height = size
    scale = min(1.0, max_side / width, max_side / height)
    return (
        min(max_side, max(1, round(width * scale))),
        min(max_side, max(1, round(height * scale))),
    )
