"""Origin and auth (with DB health) middleware for WebSockets, and the HTTP twin."""

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from channels.auth import UserLazyObject
from channels.middleware import BaseMiddleware
from channels.security.websocket import OriginValidator
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.conf import settings
from django.contrib import auth
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.db import SessionStore as DbSessionStore
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.utils.functional import LazyObject

from accounts import tokens
from ops import http_edge
from ops.batching import Coalescer
from ops.db import RETRYABLE, DatabaseUnavailable, db_call
from ops.rows import rows_by_pk

logger = logging.getLogger(__name__)

JWT_SUBPROTOCOL = "jwt"
# The scope key of a socket's deferred user lookup (ChatAuthMiddleware).
LOGIN_LOOKUP = "login_lookup"


class PresentOriginValidator(OriginValidator):
    """Refuse a foreign Origin at the handshake (403); admit a request without one.

    channels' validator also refuses a missing Origin, but PROTOCOL.md §2 checks the
    header only "when present": API clients (websockets, curl) send none, and a
    browser always sends one, so cross-site pages are still refused.
    """

    def valid_origin(self, parsed_origin):
        if parsed_origin is None:
            return True
        return self.validate_origin(parsed_origin)


def AllowedHostsOriginValidator(application):  # noqa: N802 - channels' name
    """Origin check against ALLOWED_HOSTS, as channels' factory of the same name."""
    allowed_hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = ["localhost", "127.0.0.1", "[::1]"]
    return PresentOriginValidator(application, allowed_hosts)


@dataclass(frozen=True)
class Credential:
    """What one socket presents: a valid JWT's user id, or a session with a key."""

    user_id: int | None = None  # from the JWT subprotocol
    session: Any = None  # the scope's session (channels' SessionMiddleware)
    expires_at: int | None = None  # the JWT's exp (seconds since the epoch)


def _credential(scope: dict[str, Any]) -> Credential | None:
    """The socket's credential, or None when it certainly names no user."""
    subprotocols = scope.get("subprotocols") or []
    if subprotocols and subprotocols[0] == JWT_SUBPROTOCOL:
        # The JWT alone decides, valid or not (PROTOCOL.md §1.1).
        token = subprotocols[1] if len(subprotocols) > 1 else ""
        claims = tokens.token_claims(token)
        if claims is None:
            return None
        return Credential(user_id=claims.user_id, expires_at=claims.expires_at)
    session = scope.get("session")
    if session is None or not http_edge.session_key_usable(session.session_key):
        return None  # no session cookie: Django's get_user reads nothing either
    return Credential(session=session)


def users_resolve_many(*, credentials: Sequence[Credential]) -> list[Any]:
    """The users many sockets' credentials name, in two queries for all of them.

    One query for the sessions (Django's database session store), one for the
    users; otherwise as django.contrib.auth.get_user decides for a session, with
    its session hash check, and as the JWT rules for a token (an active user).
    Per credential: the user, AnonymousUser, or the error of that one alone.
    """
    _load_sessions([c.session for c in credentials if c.session is not None])
    claims = [
        (c.user_id, None) if c.session is None else _session_claim(c.session)
        for c in credentials
    ]
    users = _users_in_bulk(claims)
    resolved: list[Any] = []
    for credential, (user_id, backend) in zip(credentials, claims, strict=True):
        try:
            if credential.session is None:
                user = users.get(user_id)
                user = user if user is not None and user.is_active else None
            else:
                user = _session_user(credential.session, user_id, backend, users)
        except RETRYABLE:
            raise  # the whole call is retried
        except Exception as exc:  # this socket's alone, raised to its caller
            resolved.append(exc)
            continue
        resolved.append(user or AnonymousUser())
    return resolved


def _load_sessions(sessions: list[Any]) -> None:
    """Load database-backed sessions not loaded yet, one query per session model."""
    by_model: dict[Any, list[Any]] = {}
    for session in sessions:
        store = session._wrapped if isinstance(session, LazyObject) else session
        # Only the stock database store: another backend (cached_db, a custom
        # one) loads itself on first use, one query per socket as before.
        loaded = hasattr(store, "_session_cache")
        if type(store).load is DbSessionStore.load and not loaded:
            by_model.setdefault(store.model, []).append(store)
    for model, stores in by_model.items():
        rows = model.objects.filter(expire_date__gt=timezone.now()).in_bulk(
            {store.session_key for store in stores}
        )
        for store in stores:
            # What SessionStore.load() leaves behind: the decoded data, or an
            # empty session without a key (unknown or expired: anonymous).
            # https://github.com/django/django/blob/5.2/django/contrib/sessions/backends/db.py
            row = rows.get(store.session_key)
            if row is None:
                store._session_key = None
                store._session_cache = {}
            else:
                store._session_cache = store.decode(row.session_data)


def _session_claim(session: Any) -> tuple[Any, str | None]:
    """The (user id, backend path) a session names, or (None, None)."""
    try:
        user_id = get_user_model()._meta.pk.to_python(session[auth.SESSION_KEY])
        backend = session[auth.BACKEND_SESSION_KEY]
    except (KeyError, ValidationError):
        # A user id the user model cannot read names no user: anonymous, where
        # get_user would raise (a 1011 for that socket, and for its whole batch).
        return None, None
    if backend not in settings.AUTHENTICATION_BACKENDS:
        return None, None
    return user_id, backend


@functools.cache
def _in_bulk_backend(backend: str | None) -> bool:
    """Whether a backend's get_user is ModelBackend's (a user loaded by pk)."""
    return backend is not None and (
        type(auth.load_backend(backend)).get_user is ModelBackend.get_user
    )


def _users_in_bulk(claims: list[tuple[Any, str | None]]) -> dict[Any, Any]:
    """Users by pk for every JWT claim and ModelBackend session claim: one query."""
    ids = {
        user_id
        for user_id, backend in claims
        if user_id is not None and (backend is None or _in_bulk_backend(backend))
    }
    if not ids:
        return {}
    return rows_by_pk(get_user_model(), ids)


def _session_user(
    session: Any, user_id: Any, backend_path: str | None, users: dict[Any, Any]
) -> Any:
    """django.contrib.auth.get_user for one session, its user loaded already."""
    # https://github.com/django/django/blob/5.2/django/contrib/auth/__init__.py
    if user_id is None or backend_path is None:
        return None
    backend = auth.load_backend(backend_path)
    if _in_bulk_backend(backend_path):
        # ModelBackend.get_user, with the user from the one query for all.
        user = users.get(user_id)
        if user is not None and not backend.user_can_authenticate(user):
            user = None
    else:
        user = backend.get_user(user_id)
    if not hasattr(user, "get_session_auth_hash"):
        return user
    session_hash = session.get(auth.HASH_SESSION_KEY)
    auth_hash = user.get_session_auth_hash()
    if session_hash and constant_time_compare(session_hash, auth_hash):
        return user
    if session_hash and any(
        constant_time_compare(session_hash, fallback)
        for fallback in user.get_session_auth_fallback_hash()
    ):
        session.cycle_key()
        session[auth.HASH_SESSION_KEY] = auth_hash
        return user
    session.flush()
    return None


@dataclass(frozen=True)
class Login:
    """Who a socket is, once looked up, and what that login hangs on."""

    user: Any  # the user, or AnonymousUser
    expires_at: int | None = None  # a JWT socket's token exp (epoch seconds)
    session_key: str | None = None  # a cookie socket's logged-in session
    db_unavailable: bool = False  # the DB stayed down through every retry


class _LoginLookup:
    """One socket's deferred user lookup: run once, when first awaited."""

    def __init__(self, scope: dict[str, Any]) -> None:
        self.scope = scope
        self.login: Login | None = None

    async def __call__(self) -> Login:
        if self.login is None:
            self.login = await _login_resolve(self.scope)
            self.scope["user"]._wrapped = self.login.user
        return self.login


async def _login_resolve(scope: dict[str, Any]) -> Login:
    """Look the scope's credential up (anonymous when the DB stays down)."""
    credential = _credential(scope)
    if credential is None or scope.get("db_unavailable"):
        return Login(AnonymousUser())
    try:
        user = await _lookups.submit(credential)
    except DatabaseUnavailable:
        return Login(AnonymousUser(), db_unavailable=True)
    if not user.is_authenticated:
        return Login(user)
    if credential.session is None:
        return Login(user, expires_at=credential.expires_at)
    return Login(user, session_key=credential.session.session_key)


async def scope_login(scope: dict[str, Any]) -> Login:
    """The socket's login: looked up now if ChatAuthMiddleware deferred it.

    Await it after the accept: it may wait through the DB retry window. When the
    DB stays down the user is anonymous and scope["db_unavailable"] is set.
    """
    lookup = scope.get(LOGIN_LOOKUP)
    if lookup is None:  # a scope made without the middleware (tests, other stacks)
        return Login(scope.get("user") or AnonymousUser())
    login = await lookup()
    if login.db_unavailable:
        # Channels' middlewares and router pass copies of the scope on: mark the
        # caller's, which is the one its consumer reads.
        scope["db_unavailable"] = True
    return login


class ChatAuthMiddleware(BaseMiddleware):
    """Give the scope a deferred lookup of its user (JWT subprotocol or cookie).

    Like channels.auth.AuthMiddleware, but the lookup waits until the consumer,
    having accepted, awaits scope_login(): the accept never waits on the DB
    (PROTOCOL.md §2), so a client learns of an outage from a frame and a close
    code whatever the server's handshake timeout. The lookup goes through our
    retry helper, so a stale or restarting DB does not refuse the socket, and it
    is the socket's DB health check: when the DB stays down it marks the scope,
    and the consumer sends `db_unavailable` and closes with 1013. Sockets
    looking up at the same time share one query (users_resolve_many).
    """

    async def __call__(self, scope, receive, send):
        scope = dict(scope)
        # Unresolved until scope_login(): reading it earlier raises ValueError.
        scope["user"] = UserLazyObject()
        scope[LOGIN_LOOKUP] = _LoginLookup(scope)
        return await super().__call__(scope, receive, send)


async def _lookup_many(credentials: list[Credential]) -> list[Any]:
    return await db_call(users_resolve_many, credentials=credentials, op="ws_auth")


_lookups: Coalescer[Credential, Any] = Coalescer(_lookup_many)


def AuthMiddlewareStack(inner):  # noqa: N802 - named like channels' own stack
    """Cookies, sessions, then user resolution (JWT or session) with DB health."""
    return CookieMiddleware(SessionMiddleware(ChatAuthMiddleware(inner)))
