"""fal's file storage, as fal's own Python client uploads to it.

Two calls (fal_client 1.0.3, `CDNTokenManager` and `_upload_v3`): a short-lived CDN token from
`POST {rest}/storage/auth/token?storage_type=fal-cdn-v3` (`{token, token_type, base_url,
expires_at}`), then `POST {cdn}/files/upload` with the raw bytes and
`Authorization: {token_type} {token}`, answered `{"access_url": ...}`. The URL is what a
model input then names. The token is reused until shortly before it expires.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx

TOKEN_PATH = "/storage/auth/token?storage_type=fal-cdn-v3"
UPLOAD_PATH = "/files/upload"
# A token this close to its expiry is renewed first: an upload must not outlive its token.
TOKEN_MARGIN = timedelta(seconds=60)


class StorageUnavailable(Exception):
    """fal's storage could not take the file; the message says why."""


@dataclass(frozen=True, slots=True)
class _Token:
    header: str
    expires_at: datetime


class FalStorage:
    def __init__(
        self, http: httpx.AsyncClient, *, rest_url: str, cdn_url: str, key: str | None
    ) -> None:
        self._http = http
        self._rest_url = rest_url.rstrip("/")
        self._cdn_url = cdn_url.rstrip("/")
        self._key = key
        self._token: _Token | None = None
        self._lock = asyncio.Lock()

    async def upload(self, data: bytes, content_type: str, file_name: str) -> str:
        """Store `data` at fal; the URL fal serves it from."""
        token = await self._current_token()
        try:
            response = await self._http.post(
                self._cdn_url + UPLOAD_PATH,
                content=data,
                headers={
                    "Authorization": token.header,
                    "Content-Type": content_type,
                    "X-Fal-File-Name": file_name,
                },
            )
        except httpx.HTTPError as exc:
            raise StorageUnavailable(f"fal's storage could not be reached: {exc!r}") from exc
        if response.status_code in (401, 403):
            self._token = None  # revoked early: the next upload asks for a new one
        url = _json_field(response, "access_url")
        if not url.startswith(("https://", "http://")):
            raise StorageUnavailable("fal's storage answered an upload without a URL")
        return url

    async def _current_token(self) -> _Token:
        async with self._lock:
            now = datetime.now(UTC)
            if self._token is None or self._token.expires_at - TOKEN_MARGIN <= now:
                self._token = await self._new_token()
            return self._token

    async def _new_token(self) -> _Token:
        if self._key is None:
            raise StorageUnavailable("no fal key is set, so no file can be uploaded to fal")
        try:
            response = await self._http.post(
                self._rest_url + TOKEN_PATH,
                json={},
                headers={"Authorization": f"Key {self._key}", "Accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise StorageUnavailable(f"fal's storage could not be reached: {exc!r}") from exc
        token = _json_field(response, "token")
        token_type = _json_field(response, "token_type")
        try:
            expires_at = datetime.fromisoformat(_json_field(response, "expires_at"))
        except ValueError as exc:
            raise StorageUnavailable("fal's storage answered a token without an expiry") from exc
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        return _Token(header=f"{token_type} {token}", expires_at=expires_at)


def _json_field(response: httpx.Response, name: str) -> str:
    if not response.is_success:
        raise StorageUnavailable(f"fal's storage answered {response.status_code}")
    try:
        value = response.json().get(name)
    except (ValueError, AttributeError) as exc:
        raise StorageUnavailable("fal's storage answered something other than JSON") from exc
    if not isinstance(value, str) or not value:
        raise StorageUnavailable(f"fal's storage answered without {name!r}")
    return value
