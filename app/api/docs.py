"""The API's documentation pages: /docs (Swagger UI) and /redoc (ReDoc), with their scripts and
styles served from this package (`docs_assets/`, vendored from npm by its `refresh.sh`), so both
work with no network. FastAPI's own pages load them from a CDN; `create_app` turns those off.

The assets' URLs carry their package's version, so browsers may keep them for good; each page's
Content-Security-Policy allows this origin alone, so nothing it renders can reach another host.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import re
from dataclasses import dataclass
from importlib.resources import files

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.responses import HTMLResponse, Response

from app.errors import NotFound

router = APIRouter(include_in_schema=False)

ASSETS_PATH = "/docs/assets"
_ASSETS = files("app.api").joinpath("docs_assets")
# The files the two pages load, by URL path under ASSETS_PATH, and the npm package each is from.
_SERVED = {
    "swagger-ui/swagger-ui-bundle.js": "swagger-ui-dist",
    "swagger-ui/swagger-ui.css": "swagger-ui-dist",
    "swagger-ui/favicon-32x32.png": "swagger-ui-dist",
    "redoc/redoc.standalone.js": "redoc",
}
_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
}
_IMMUTABLE = "public, max-age=31536000, immutable"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def versions() -> dict[str, str]:
    """The vendored packages' versions, from VERSIONS (which refresh.sh writes)."""
    lines = _ASSETS.joinpath("VERSIONS").read_text().splitlines()
    return {
        package: version
        for package, version, _integrity in (
            line.split() for line in lines if line.strip() and not line.startswith("#")
        )
    }


_VERSIONS = versions()


def asset_url(root_path: str, name: str) -> str:
    # The version in the query names the content: a refresh changes it, so caching is safe.
    return f"{root_path}{ASSETS_PATH}/{name}?v={_VERSIONS[_SERVED[name]]}"


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    gzipped: bytes | None
    media_type: str


@functools.cache
def _load(name: str) -> _Asset:
    """Read (and, for text, gzip) once, on first request: not at import, which every CLI
    command pays for."""
    body = _ASSETS.joinpath(*name.split("/")).read_bytes()
    media_type = _MEDIA_TYPES[name[name.rindex(".") :]]
    # Swagger UI's bundle is 1.7 MB, a quarter of that gzipped.
    gzipped = gzip.compress(body, mtime=0) if media_type.startswith("text/") else None
    return _Asset(body, gzipped, media_type)


def _accepts_gzip(accept_encoding: str) -> bool:
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() == "gzip":
            q = params.strip().removeprefix("q=").strip() if "q=" in params else "1"
            try:
                return float(q) > 0
            except ValueError:
                return False
    return False


@router.get(ASSETS_PATH + "/{package}/{name}")
def docs_asset(package: str, name: str, request: Request) -> Response:
    # A plain def: the first request of each asset reads and compresses it in the thread pool.
    path = f"{package}/{name}"
    if path not in _SERVED:
        raise NotFound(f"{ASSETS_PATH}/{path} is not a documentation asset.")
    asset = _load(path)
    headers = {"Cache-Control": _IMMUTABLE, "X-Content-Type-Options": "nosniff"}
    if asset.gzipped is None:
        return Response(asset.body, media_type=asset.media_type, headers=headers)
    headers["Vary"] = "Accept-Encoding"
    if _accepts_gzip(request.headers.get("accept-encoding", "")):
        headers["Content-Encoding"] = "gzip"
        return Response(asset.gzipped, media_type=asset.media_type, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def _confined(page: HTMLResponse) -> HTMLResponse:
    """The page may load and call this origin only. Its one inline script (Swagger UI's set-up)
    is allowed by its hash; ReDoc injects its styles and runs its search in a blob worker."""
    scripts = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(bytes(page.body).decode())
    )
    page.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'self' {scripts}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src blob:; "
        "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    )
    page.headers["Referrer-Policy"] = "same-origin"
    page.headers["X-Content-Type-Options"] = "nosniff"
    return page


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return _confined(
        get_swagger_ui_html(
            openapi_url=root + request.app.openapi_url,
            title=f"{request.app.title} - Swagger UI",
            swagger_js_url=asset_url(root, "swagger-ui/swagger-ui-bundle.js"),
            swagger_css_url=asset_url(root, "swagger-ui/swagger-ui.css"),
            swagger_favicon_url=asset_url(root, "swagger-ui/favicon-32x32.png"),
            # Swagger UI would otherwise ask validator.swagger.io about the document.
            swagger_ui_parameters={"validatorUrl": None},
        )
    )


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return _confined(
        get_redoc_html(
            openapi_url=root + request.app.openapi_url,
            title=f"{request.app.title} - ReDoc",
            redoc_js_url=asset_url(root, "redoc/redoc.standalone.js"),
            redoc_favicon_url=asset_url(root, "swagger-ui/favicon-32x32.png"),
            with_google_fonts=False,
        )
    )
