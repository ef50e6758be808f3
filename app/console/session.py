"""Who is signed in to the console, and the checks on what they post.

Signing in with an API key starts a session: a row in Postgres (`console_sessions`, holding
the SHA-256 of a random token, the key it was started with and an expiry) and the token in a
cookie the page's scripts cannot read (HttpOnly), that no other site's request carries
(SameSite=Strict) and that only /console receives. The cookie is not the key: it is useless on
/v1, and it stops working when the visitor logs out (the row is deleted), when it expires, or
when its key is revoked (checked on every request, with no cache in between). Any replica can
serve any page: the state is in Postgres.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from urllib.parse import parse_qsl, urlsplit

import orjson
from fastapi import Depends, Request
from starlette.responses import Response

from app import ids
from app.api.deps import RuntimeDep
from app.auth import keys
from app.console import repository
from app.db.pool import Pool
from app.lifecycle import purge as lifecycle

PATH = "/console"
SESSION_COOKIE = "falrelay_console"
FLASH_COOKIE = "falrelay_flash"
SESSION_MAX_AGE = 12 * 3600
# Expired sessions deleted per login: enough to keep up with any number of logins.
EXPIRED_PER_LOGIN = 100
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
_MAX_FORM_FIELDS = 20
_CSRF_MESSAGE = b"falrelay console form"


class LoginRequired(Exception):
    """No session, or it ended (logged out, expired, its key revoked): the login page."""


class CsrfRefused(Exception):
    """A form post without this session's token (or from another origin): 403, nothing done."""


@dataclass(frozen=True, slots=True)
class Session:
    id: uuid.UUID
    client_id: uuid.UUID
    token: str

    @property
    def csrf_token(self) -> str:
        return csrf_token(self.token)


def csrf_token(token: str) -> str:
    """An HMAC keyed by the session's token: another site can neither read the cookie nor
    compute this from anything it can see, so a forged form cannot carry it; and it dies with
    the session."""
    return hmac.new(token.encode(), _CSRF_MESSAGE, hashlib.sha256).hexdigest()


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def open_session(pool: Pool, key: str, now: datetime) -> Session | None:
    """A new session for the holder of `key`, or None (and nothing stored) if the key is
    unknown or revoked. The key itself is checked in Postgres, not in the key cache."""
    token = secrets.token_urlsafe(32)
    session_id = ids.uuid7()
    client_id = await repository.insert_session(
        pool,
        session_id=session_id,
        token_hash=_token_hash(token),
        key_hash=keys.hash_key(key),
        expires_at=now + timedelta(seconds=SESSION_MAX_AGE),
    )
    if client_id is None:
        return None
    # Logins tidy up after the sessions nobody logged out of (only after a good key, so that
    # guessing keys costs the database nothing more than a lookup).
    await lifecycle.purge_sessions(pool, now, limit=EXPIRED_PER_LOGIN)
    return Session(session_id, client_id, token)


async def close_session(pool: Pool, user: Session) -> None:
    await repository.delete_session(pool, user.id)


async def resolve(request: Request, pool: Pool, now: datetime) -> Session | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    stored = await repository.find_session(pool, _token_hash(token), now)
    return None if stored is None else Session(stored.id, stored.client_id, token)


async def current_session(request: Request, runtime: RuntimeDep) -> Session:
    user = await resolve(request, runtime.pool, datetime.now(UTC))
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
    page of this site (else another site could sign a visitor in as the attacker).

    "This site" is the scheme and Host the request arrived with. Behind a TLS-terminating
    proxy the scheme is the proxy's X-Forwarded-Proto, believed only from the peers in
    FALRELAY_FORWARDED_ALLOW_IPS, and the proxy must pass the browser's Host header through
    (ingress controllers do). X-Forwarded-Host is not consulted: nothing vouches for it."""
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
        # Behind a TLS-terminating proxy, the scheme is its X-Forwarded-Proto when the proxy
        # is one of FALRELAY_FORWARDED_ALLOW_IPS (uvicorn's proxy headers, set up in cli.py).
        secure=request.url.scheme == "https",
    )


def _delete_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(
        name, path=PATH, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )


def start(request: Request, response: Response, user: Session) -> None:
    _set_cookie(request, response, SESSION_COOKIE, user.token, max_age=SESSION_MAX_AGE)


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
