"""API keys: 256 random bits behind a recognisable prefix, stored only as a SHA-256."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "frk_"
SHOWN_PREFIX_LENGTH = 12


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def shown_prefix(key: str) -> str:
    return key[:SHOWN_PREFIX_LENGTH]
