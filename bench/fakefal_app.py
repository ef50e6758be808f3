"""The built-in fake fal (app.fakefal) as an ASGI factory: `uvicorn --factory
bench.fakefal_app:create`. Zero queue and run latency, no faults: its defaults."""

from __future__ import annotations

from starlette.types import ASGIApp

from app.cli import freeze_startup_heap
from app.fakefal import FakeFal, FakeFalConfig


def create() -> ASGIApp:
    app = FakeFal(FakeFalConfig()).app
    freeze_startup_heap()  # as `falrelay fakefal` does
    return app
