"""Origin and auth (with DB health) middleware for WebSockets, and the HTTP twin."""

import logging
from types import SimpleNamespace
from typing import Any

from channels.auth import UserLazyObject
from channels.middleware import BaseMiddleware
from channels.security.websocket import OriginValidator
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.conf import settings
from django.contrib import auth
from django.contrib.auth.models import AnonymousUser

from accounts import tokens
from ops.db import DatabaseUnavailable, db_call

logger = logging.getLogger(__name__)

JWT_SUBPROTOCOL = "jwt"


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


def _user_from_session(session: Any) -> Any:
    """Django's own session-to-user resolution, run in the DB worker thread."""
    return auth.get_user(SimpleNamespace(session=session))


def _user_from_token(token: str) -> Any:
    """The active user a valid JWT names, else AnonymousUser."""
    user_id = tokens.token_user_id(token)
    if user_id is None:
        return AnonymousUser()
    model = auth.get_user_model()
    user = model._default_manager.filter(pk=user_id, is_active=True).first()
    return user or AnonymousUser()


class ChatAuthMiddleware(BaseMiddleware):
    """Resolve scope["user"] from the JWT subprotocol or the session cookie.

    Like channels.auth.AuthMiddleware, but the lookup goes through our retry helper,
    so a stale or restarting DB does not refuse the socket. That lookup is also the
    socket's DB health check: it drops a dead connection and retries; when the DB
    stays down it never raises but marks the scope, so that the consumer can
    accept, send `db_unavailable` and close with 1013 (PROTOCOL.md §2). A separate
    ping before it cost every connect a thread hop and a round trip.
    """

    async def __call__(self, scope, receive, send):
        scope = dict(scope)
        scope["user"] = UserLazyObject()
        subprotocols = scope.get("subprotocols") or []
        user: Any = AnonymousUser()
        if not scope.get("db_unavailable"):
            try:
                if subprotocols and subprotocols[0] == JWT_SUBPROTOCOL:
                    token = subprotocols[1] if len(subprotocols) > 1 else ""
                    user = await db_call(_user_from_token, token, op="ws_auth_jwt")
                elif "session" in scope:
                    user = await db_call(
                        _user_from_session, scope["session"], op="ws_auth_session"
                    )
            except DatabaseUnavailable:
                scope["db_unavailable"] = True
        scope["user"]._wrapped = user
        return await super().__call__(scope, receive, send)


def AuthMiddlewareStack(inner):  # noqa: N802 - named like channels' own stack
    """Cookies, sessions, then user resolution (JWT or session) with DB health."""
    return CookieMiddleware(SessionMiddleware(ChatAuthMiddleware(inner)))
