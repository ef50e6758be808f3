"""A fake fal.ai queue: fal's queue protocol, faithfully enough for fal's own clients.

`FakeFal(config).app` is an ASGI app to serve alone (`falrelay fakefal`) or mount; see
`server.py` for the protocol, `config.py` for the knobs and `control.py` for `/_fake/`.
"""

from app.fakefal.config import FakeFalConfig
from app.fakefal.server import FakeFal

__all__ = ["FakeFal", "FakeFalConfig"]
