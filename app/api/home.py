"""`GET /`: where to go from here (the console, the API docs, the OpenAPI document, the health
probe). A page for people, and the same links as JSON for `Accept: application/json`.

Kept out of the OpenAPI document, like /docs and /console: it is a signpost, not an operation.
"""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, Response

from app import __version__
from app.api.responses import JSONBytes

router = APIRouter(include_in_schema=False)

# (name in the JSON answer, path, what a person finds there)
LINKS = (
    ("console", "/console", "the web console: jobs, webhooks, usage (sign in with an API key)"),
    ("docs", "/docs", "the API reference, to try requests in (Swagger UI)"),
    ("redoc", "/redoc", "the API reference, to read (ReDoc)"),
    ("openapi", "/openapi.json", "the OpenAPI document, for generating clients"),
    ("health", "/healthz", "liveness probe"),
)

_STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}"
    "li{margin:.4rem 0}"
)
_HEADERS = {
    "Vary": "Accept",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}


def _wants_json(accept: str) -> bool:
    """JSON when it is asked for by name and HTML is not (browsers name text/html)."""
    types = {item.split(";")[0].strip().lower() for item in accept.split(",")}
    return "application/json" in types and "text/html" not in types


@router.get("/")
def home(request: Request) -> Response:
    root = request.scope.get("root_path", "")
    if _wants_json(request.headers.get("accept", "")):
        return JSONBytes(
            {
                "name": "falrelay",
                "version": __version__,
                "links": {name: root + path for name, path, _ in LINKS},
            },
            headers=_HEADERS,
        )
    items = "\n".join(
        f'<li><a href="{escape(root + path)}">{escape(path)}</a>: {escape(about)}</li>'
        for _, path, about in LINKS
    )
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>falrelay</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>falrelay {escape(__version__)}</h1>
<p>A durable jobs API in front of fal.ai's queue.</p>
<ul>
{items}
</ul>
</body>
</html>
"""
    return HTMLResponse(page, headers=_HEADERS)
