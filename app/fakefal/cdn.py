"""fal's storage over HTTP: the REST API's upload calls and the CDN's, on the fake's one port.

Clients map `https://rest.fal.ai/` and `https://v3.fal.media/` to the fake's root. The calls are
those of fal's clients (protocol notes 5, addendum):

- `POST /storage/auth/token?storage_type=fal-cdn-v3` (`Authorization: Key ...`) answers
  `{token, token_type, base_url, expires_at}`;
- `POST /files/upload` with `Authorization: {token_type} {token}`, the raw bytes, `Content-Type`
  and optionally `X-Fal-File-Name`, answers `{access_url}`;
- over 100 MB, fal_client's multipart: `POST {base_url}/files/upload/multipart` answers
  `{access_url, uploadId}`, then `PUT {access_url}/multipart/{uploadId}/{n}` (answering an
  `ETag`) and `POST {access_url}/multipart/{uploadId}/complete` with `{"parts": [...]}`;
- the JS client (and fal_client's fallback): `POST /storage/upload/initiate` (`Key` auth)
  `{content_type, file_name}` answers `{upload_url, file_url}`, then a plain `PUT upload_url`;
  over 90 MB `initiate-multipart`, `PUT {upload_url}/{n}` answering `{partNumber, etag}`, and
  `POST {upload_url}/complete`.

The upload URL is a capability, as a signed URL is: its PUTs need no other credentials. A file is
served back at its URL byte for byte, with the content type it was uploaded with.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from app.fakefal.storage import Blob, CdnTokens, FileStore, StorageFull

if TYPE_CHECKING:
    from app.fakefal.server import FakeFal

TOKEN_TYPE = "Bearer"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
_FILE = "/files/u/{folder:str}/{name:str}"


def routes(fake: FakeFal) -> list[BaseRoute]:
    files: FileStore = fake.files
    tokens: CdnTokens = fake.cdn_tokens

    def refuse_token(request: Request) -> Response | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if not scheme:
            return JSONResponse({"detail": "Missing authorization header"}, 401)
        if scheme.lower() != TOKEN_TYPE.lower() or not tokens.valid(token.strip()):
            return JSONResponse({"detail": "Invalid or expired upload token"}, 401)
        return None

    async def read_into(request: Request, blob: Blob, digest: Any = None) -> Response | None:
        """Stream the body into `blob` (and `digest`); a 413 when the store cannot hold it."""
        try:
            async for chunk in request.stream():
                files.write(blob, chunk)
                if digest is not None:
                    digest.update(chunk)
        except StorageFull:
            files.forget(blob)
            return JSONResponse({"detail": "File too large for the fake's storage"}, 413)
        return None

    def file_url(request: Request, key: str) -> str:
        return f"{fake.base_url(request)}/files/{key}"

    async def auth_token(request: Request) -> Response:
        """A CDN token; `base_url` is where the multipart calls go: here."""
        if (refusal := fake.refuse_key(request)) is not None:
            return refusal
        token, expires = tokens.issue()
        return JSONResponse(
            {
                "token": token,
                "token_type": TOKEN_TYPE,
                "base_url": fake.base_url(request),
                "expires_at": datetime.fromtimestamp(expires, UTC).isoformat(),
            }
        )

    async def upload(request: Request) -> Response:
        if (refusal := refuse_token(request)) is not None:
            return refusal
        content_type = request.headers.get("content-type") or DEFAULT_CONTENT_TYPE
        key = files.new_key(request.headers.get("x-fal-file-name"), content_type)
        blob = Blob()
        if (refusal := await read_into(request, blob)) is not None:
            return refusal
        files.keep(key, [blob], content_type)
        fake.stats.files_uploaded += 1
        return JSONResponse({"access_url": file_url(request, key)})

    async def start_multipart(request: Request) -> Response:
        if (refusal := refuse_token(request)) is not None:
            return refusal
        content_type = request.headers.get("content-type") or DEFAULT_CONTENT_TYPE
        key = files.new_key(request.headers.get("x-fal-file-name"), content_type)
        upload_id = files.start(key, content_type, multipart=True)
        return JSONResponse({"access_url": file_url(request, key), "uploadId": upload_id})

    async def put_part(request: Request) -> Response:
        if (refusal := refuse_token(request)) is not None:
            return refusal
        return await store_part(request, _key(request), request.path_params["upload_id"])

    async def complete_multipart(request: Request) -> Response:
        if (refusal := refuse_token(request)) is not None:
            return refusal
        return await complete(request, _key(request), request.path_params["upload_id"])

    async def initiate(request: Request) -> Response:
        return await initiated(request, multipart=False)

    async def initiate_multipart(request: Request) -> Response:
        return await initiated(request, multipart=True)

    async def initiated(request: Request, *, multipart: bool) -> Response:
        """The REST API's upload: a file URL, and a URL to PUT the bytes (or parts) to."""
        if (refusal := fake.refuse_key(request)) is not None:
            return refusal
        try:
            body: Any = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return JSONResponse({"detail": "The body must be a JSON object"}, 422)
        content_type = body.get("content_type")
        file_name = body.get("file_name")
        if not isinstance(content_type, str) or not content_type:
            content_type = DEFAULT_CONTENT_TYPE
        key = files.new_key(file_name if isinstance(file_name, str) else None, content_type)
        upload_id = files.start(key, content_type, multipart=multipart)
        return JSONResponse(
            {
                "upload_url": f"{fake.base_url(request)}/storage/uploads/{upload_id}",
                "file_url": file_url(request, key),
            }
        )

    async def put_initiated(request: Request) -> Response:
        upload_id: str = request.path_params["upload_id"]
        pending = files.pending(upload_id)
        if pending is None or pending.multipart:
            return JSONResponse({"detail": "Upload not found"}, 404)
        blob = Blob()
        if (refusal := await read_into(request, blob)) is not None:
            return refusal
        if files.pending(upload_id) is not pending:  # a reset, or a PUT racing this one
            files.forget(blob)
            return JSONResponse({"detail": "Upload not found"}, 404)
        files.finish(upload_id, blob)
        fake.stats.files_uploaded += 1
        return Response(status_code=200)

    async def put_initiated_part(request: Request) -> Response:
        upload_id: str = request.path_params["upload_id"]
        pending = files.pending(upload_id)
        return await store_part(request, None if pending is None else pending.key, upload_id)

    async def complete_initiated(request: Request) -> Response:
        upload_id: str = request.path_params["upload_id"]
        pending = files.pending(upload_id)
        return await complete(request, None if pending is None else pending.key, upload_id)

    async def store_part(request: Request, key: str | None, upload_id: str) -> Response:
        pending = files.pending(upload_id)
        number: int = request.path_params["part"]
        if pending is None or not pending.multipart or pending.key != key:
            return JSONResponse({"detail": "Upload not found"}, 404)
        if not 1 <= number <= 10_000:
            return JSONResponse({"detail": "Part numbers go from 1 to 10000"}, 422)
        blob, digest = Blob(), hashlib.md5(usedforsecurity=False)
        if (refusal := await read_into(request, blob, digest)) is not None:
            return refusal
        if files.pending(upload_id) is not pending:
            files.forget(blob)
            return JSONResponse({"detail": "Upload not found"}, 404)
        etag = f'"{digest.hexdigest()}"'
        files.add_part(pending, number, blob, etag)
        return JSONResponse({"partNumber": number, "etag": etag}, headers={"ETag": etag})

    async def complete(request: Request, key: str | None, upload_id: str) -> Response:
        pending = files.pending(upload_id)
        if pending is None or not pending.multipart or pending.key != key:
            return JSONResponse({"detail": "Upload not found"}, 404)
        try:
            body: Any = await request.json()
            order = [(int(part["partNumber"]), str(part["etag"])) for part in body["parts"]]
        except (ValueError, KeyError, TypeError):
            detail = 'The body must be {"parts": [{"partNumber": n, "etag": "..."}, ...]}'
            return JSONResponse({"detail": detail}, 422)
        try:
            files.complete(upload_id, order)
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, 400)
        fake.stats.files_uploaded += 1
        return JSONResponse({"access_url": file_url(request, pending.key)})

    async def serve(request: Request) -> Response:
        stored = files.get(_key(request))
        if stored is None:
            return JSONResponse({"detail": "File not found"}, 404)
        # The content type exactly as uploaded (no charset added), and its length.
        headers = {"content-type": stored.content_type, "content-length": str(stored.size)}
        data = stored.in_memory()
        if data is not None:
            return Response(data, headers=headers)
        if request.method == "HEAD":
            return Response(headers=headers)
        return StreamingResponse(_off_loop(stored.chunks()), headers=headers)

    return [
        Route("/storage/auth/token", auth_token, methods=["POST"]),
        Route("/storage/upload/initiate", initiate, methods=["POST"]),
        Route("/storage/upload/initiate-multipart", initiate_multipart, methods=["POST"]),
        Route("/storage/uploads/{upload_id:str}", put_initiated, methods=["PUT"]),
        Route("/storage/uploads/{upload_id:str}/{part:int}", put_initiated_part, methods=["PUT"]),
        Route("/storage/uploads/{upload_id:str}/complete", complete_initiated, methods=["POST"]),
        Route("/files/upload", upload, methods=["POST"]),
        Route("/files/upload/multipart", start_multipart, methods=["POST"]),
        Route(_FILE, serve, methods=["GET"]),
        Route(_FILE + "/multipart/{upload_id:str}/{part:int}", put_part, methods=["PUT"]),
        Route(_FILE + "/multipart/{upload_id:str}/complete", complete_multipart, methods=["POST"]),
    ]


def _key(request: Request) -> str:
    return f"u/{request.path_params['folder']}/{request.path_params['name']}"


async def _off_loop(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Disk reads in a worker thread, one chunk at a time (`chunks` yields no empty chunk)."""
    while chunk := await asyncio.to_thread(next, chunks, b""):
        yield chunk
