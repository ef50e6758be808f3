"""Who is signed in to the console, and the checks on what they post.

The session is the client's API key itself, in a cookie the page's scripts cannot read
(HttpOnly), that no other site's request carries (SameSite=Strict) and that only /console
receives. Every request resolves it like a bearer key, so revoking the key ends the session
within FALRELAY_API_KEY_CACHE_SECONDS, and any replica can serve any page: there is no
server-side session state.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import parse_qsl, urlsplit

import orjson
from fastapi import Depends, Request
from starlette.responses import Response

from app.api.deps import RuntimeDep
from app.auth.service import KeyResolver

PATH = "/console"
SESSION_COOKIE = "falrelay_console"
FLASH_COOKIE = "falrelay_flash"
SESSION_MAX_AGE = 12 * 3600
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
_MAX_FORM_FIELDS = 20
_CSRF_MESSAGE = b"falrelay console form"


class LoginRequired(Exception):
    """No session, or its key no longer resolves: the answer is the login page."""


class CsrfRefused(Exception):
    """A form post without this session's token (or from another origin): 403, nothing done."""


@dataclass(frozen=True, slots=True)
class Session:
    client_id: uuid.UUID
    key: str

    @property
    def csrf_token(self) -> str:
        return csrf_token(self.key)


def csrf_token(key: str) -> str:
    """An HMAC keyed by the session's secret: another site can neither read the cookie nor
    compute this from anything it can see, so a forged form cannot carry it."""
    return hmac.new(key.encode(), _CSRF_MESSAGE, hashlib.sha256).hexdigest()


async def resolve(request: Request, keys: KeyResolver) -> Session | None:
    key = request.cookies.get(SESSION_COOKIE)
    principal = await keys.resolve(key) if key else None
    return None if principal is None or key is None else Session(principal.client_id, key)


async def current_session(request: Request, runtime: RuntimeDep) -> Session:
    user = await resolve(request, runtime.keys)
    if user is None:
        raise LoginRequired
    return user


SessionDep = Annotated[Session, Depends(current_session)]


async def read_form(request: Request) -> dict[str, str]:
    """A urlencoded form (the only kind the console's pages post); anything else is empty.
    The body is already bounded by the app's body-size limit."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != FORM_MEDIA_TYPE:
        return {}
    body = (await request.body()).decode("utf-8", "replace")
    try:
        return dict(parse_qsl(body, keep_blank_values=True, max_num_fields=_MAX_FORM_FIELDS))
    except ValueError:
        return {}


async def checked_form(request: Request, session: SessionDep) -> dict[str, str]:
    form = await read_form(request)
    if not hmac.compare_digest(form.get("csrf", ""), session.csrf_token):
        raise CsrfRefused
    return form


CheckedFormDep = Annotated[dict[str, str], Depends(checked_form)]


def same_origin(request: Request) -> bool:
    """The login form has no session to derive a token from yet; instead it must come from a
    page of this site (else another site could sign a visitor in as the attacker)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        # Browsers send Origin on every cross-site POST; "null" is an opaque (sandboxed) origin.
        return origin is None and request.headers.get("sec-fetch-site") in (None, "same-origin")
    parts = urlsplit(origin)
    return (parts.scheme, parts.netloc) == (request.url.scheme, request.url.netloc)


def _set_cookie(
    request: Request, response: Response, name: str, value: str, *, max_age: int
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PATH,
        httponly=True,
        samesite="strict",
        # Behind a proxy this relies on uvicorn's --proxy-headers for the scheme.
        secure=request.url.scheme == "https",
    )


def _delete_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(
        name, path=PATH, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )


def start(request: Request, response: Response, key: str) -> None:
    _set_cookie(request, response, SESSION_COOKIE, key, max_age=SESSION_MAX_AGE)


def end(request: Request, response: Response) -> None:
    _delete_cookie(request, response, SESSION_COOKIE)


FlashKind = Literal["ok", "error"]


@dataclass(frozen=True, slots=True)
class Flash:
    kind: FlashKind
    text: str


def flash(request: Request, response: Response, kind: FlashKind, text: str) -> None:
    """A message for the next page this browser shows (the result of a form post)."""
    value = base64.urlsafe_b64encode(orjson.dumps([kind, text])).decode()
    _set_cookie(request, response, FLASH_COOKIE, value, max_age=60)


def read_flash(request: Request) -> Flash | None:
    """The message a form post left for this page (cleared by `clear_flash`)."""
    value = request.cookies.get(FLASH_COOKIE)
    if value is None:
        return None
    try:
        kind, text = orjson.loads(base64.urlsafe_b64decode(value))
    except (binascii.Error, orjson.JSONDecodeError, TypeError, ValueError):
        return None
    if kind not in ("ok", "error") or not isinstance(text, str):
        return None
    return Flash(kind, text[:500])


def clear_flash(request: Request, response: Response) -> None:
    if FLASH_COOKIE in request.cookies:
        _delete_cookie(request, response, FLASH_COOKIE)
