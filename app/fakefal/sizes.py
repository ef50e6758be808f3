"""Pixel sizes for an aspect ratio and a resolution.

The rule: width and height are multiples of 16 in exactly the requested ratio; among those, the
pair whose area is closest to 1024² (`1K`) or 2048² (`2K`). It reproduces every 2K size published
for ImagineArt 2.0 (16:9 is 2816x1584, 4:3 2368x1776, 21:9 3136x1344, ...).
"""

from __future__ import annotations

import math

TARGET_SIDE = {"1K": 1024, "2K": 2048}
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
