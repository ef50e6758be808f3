from __future__ import annotations


class ObjectNotFound(LookupError):
    """No object under this key."""
