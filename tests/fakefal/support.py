"""Helpers for the fake fal's tests: a running fake, a webhook receiver, waiting, JWKS checks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.fakefal import FakeFal

IMAGINEART = "imagineart/imagineart-2.0-preview/text-to-image"
IMAGINEART_APP = "imagineart/imagineart-2.0-preview"


@dataclass
class RunningFake:
    fake: FakeFal
    url: str

    def submit_url(self, model: str = IMAGINEART) -> str:
        return f"{self.url}/{model}"


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook receiver: records every POST; answers from `answers` in turn, then 200.
    `/moved` answers a redirect to `/target`, which must never be reached."""

    url: str = ""
    answers: list[int] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.app = Starlette(
            routes=[
                Route("/hook", self._hook, methods=["POST"]),
                Route("/moved", self._moved, methods=["POST"]),
                Route("/target", self._hook, methods=["POST"]),
            ]
        )

    async def _hook(self, request: Request) -> Response:
        self._record(request, await request.body())
        with self._lock:
            code = self.answers.pop(0) if self.answers else 200
        return JSONResponse({"ok": code < 300}, code)

    async def _moved(self, request: Request) -> Response:
        self._record(request, await request.body())
        return Response(status_code=307, headers={"Location": f"{self.url}/target"})

    def _record(self, request: Request, body: bytes) -> None:
        delivery = Delivery(request.url.path, dict(request.headers), body, time.monotonic())
        with self._lock:
            self.deliveries.append(delivery)

    def clear(self) -> None:
        with self._lock:
            self.answers.clear()
            self.deliveries.clear()

    @property
    def hook(self) -> str:
        return f"{self.url}/hook"


async def wait_for(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def wait_completed(http: httpx.AsyncClient, status_url: str, within: float = 5.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        response = await http.get(status_url)
        if response.json()["status"] == "COMPLETED":
            return response.json()
        if time.monotonic() > deadline:
            raise AssertionError(f"not completed in time: {response.json()}")
        await asyncio.sleep(0.02)


def verify_signature(delivery: Delivery, jwks: dict[str, Any]) -> bool:
    """fal's documented verification, with `cryptography`."""
    headers = delivery.headers
    message = "\n".join(
        [
            headers["x-fal-webhook-request-id"],
            headers["x-fal-webhook-user-id"],
            headers["x-fal-webhook-timestamp"],
            hashlib.sha256(delivery.body).hexdigest(),
        ]
    ).encode()
    signature = bytes.fromhex(headers["x-fal-webhook-signature"])
    for key in jwks["keys"]:
        x = key["x"]
        raw = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(signature, message)
        except InvalidSignature:
            continue
        return True
    return False
