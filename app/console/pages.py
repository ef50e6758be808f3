"""Rendering the console: templates, the stylesheet, HTML error pages, safe redirects."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from typing import Any, cast
from urllib.parse import quote, urlsplit

import jinja2
from fastapi import Request
from fastapi.routing import APIRoute
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.catalog.pricing import usd_text
from app.console import queries, session
from app.console.views import file_facts, seconds_text, size_text
from app.errors import AppError
from app.runtime import Runtime

_PACKAGE = files("app.console")
STYLESHEET = _PACKAGE.joinpath("static", "console.css").read_bytes()
# The stylesheet's URL names its content, so browsers may cache it for good.
STYLESHEET_VERSION = hashlib.sha256(STYLESHEET).hexdigest()[:12]
STYLESHEET_URL = f"{session.PATH}/static/console.css?v={STYLESHEET_VERSION}"


def _when(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(value: datetime | None) -> str:
    if value is None:
        return ""
    seconds = int((datetime.now(UTC) - value).total_seconds())
    if seconds < 0:
        return _until(value)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return "just now" if seconds < 5 else f"{seconds} s ago"


def _until(value: datetime | None) -> str:
    if value is None:
        return ""
    seconds = int((value - datetime.now(UTC)).total_seconds())
    if seconds <= 0:
        return "now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"in {seconds // size} {unit}"
    return f"in {seconds} s"


def _elapsed(value: timedelta) -> str:
    seconds = value.total_seconds()
    if seconds < 60:
        return f"+{seconds:.2f} s" if seconds < 10 else f"+{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"+{minutes} min {rest} s"
    return f"+{minutes // 60} h {minutes % 60} min"


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat()


_env = jinja2.Environment(
    loader=jinja2.PackageLoader("app.console", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(
    when=_when,
    ago=_ago,
    until=_until,
    iso=_iso,
    elapsed=_elapsed,
    usd=lambda d: f"${usd_text(d)}",
    size=size_text,
    seconds=seconds_text,
    file_facts=file_facts,
)
_env.globals.update(stylesheet_url=STYLESHEET_URL, root=session.PATH)


def _headers(nonce: str) -> dict[str, str]:
    # Images, videos and sounds come from fal's file hosts (anywhere, or inline when fal sent
    # the bytes); everything else only from this app, and the one inline script only with this
    # response's nonce.
    policy = (
        "default-src 'none'; "
        f"style-src 'self'; script-src 'nonce-{nonce}'; img-src * data:; media-src * data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        # Pages show a client's data (and, once, a new secret): never stored by a cache.
        "Cache-Control": "no-store",
        "Referrer-Policy": "same-origin",
        "X-Content-Type-Options": "nosniff",
    }


def render(
    request: Request,
    template: str,
    *,
    status_code: int = 200,
    user: session.Session | None = None,
    client_name: str | None = None,
    **context: Any,
) -> HTMLResponse:
    """A page; with `user`, the header shows who is signed in and any pending flash."""
    nonce = secrets.token_urlsafe(16)
    flash = session.read_flash(request) if user is not None else None
    body = _env.get_template(template).render(
        user=user,
        client_name=client_name,
        csrf=user.csrf_token if user is not None else "",
        flash=flash,
        nonce=nonce,
        path=request.url.path,
        **context,
    )
    response = HTMLResponse(body, status_code=status_code, headers=_headers(nonce))
    if user is not None:
        session.clear_flash(request, response)
    return response


def stylesheet() -> Response:
    return Response(
        STYLESHEET,
        media_type="text/css",
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )


def local_path(value: str | None, default: str) -> str:
    """`value` if it is a console path of this site, else `default`: redirects taken from a
    form or a query never lead off the site."""
    if not value or not value.startswith(session.PATH + "/") or "\\" in value:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or "//" in parts.path:
        return default
    return value


def see_other(url: str) -> RedirectResponse:
    """The answer to a form post: the browser loads `url` with a GET."""
    return RedirectResponse(url, status_code=303)


def to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    back = quote(target, safe="") if request.method == "GET" else ""
    response = see_other(f"{session.PATH}/login" + (f"?next={back}" if back else ""))
    # A cookie whose session ended would otherwise be sent, and refused, until it expires.
    if session.SESSION_COOKIE in request.cookies:
        session.end(request, response)
    return response


async def error_page(
    request: Request, status_code: int, title: str, detail: str | None
) -> Response:
    # Shown inside the console's frame when the visitor is signed in (a 404 for an id that is
    # not theirs), so the way back is one click.
    runtime = cast(Runtime, request.app.state.runtime)
    user = await session.resolve(request, runtime.pool, datetime.now(UTC))
    name = await queries.client_name(runtime.pool, user.client_id) if user else None
    return render(
        request,
        "error.html",
        status_code=status_code,
        user=user,
        client_name=name,
        code=status_code,
        title=title,
        detail=detail or title,
    )


class ConsoleRoute(APIRoute):
    """Console routes answer in HTML: a missing session is the login page, a refused form
    a 403 page, and the domain's errors (another client's id is a 404) an error page instead
    of the API's problem+json."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except session.LoginRequired:
                return to_login(request)
            except session.CsrfRefused:
                return await error_page(
                    request,
                    403,
                    "Form refused",
                    "This form is out of date or did not come from this console. "
                    "Go back, reload the page and try again.",
                )
            except AppError as exc:
                return await error_page(request, exc.status, exc.title, exc.detail)

        return handle
