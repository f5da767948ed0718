"""A socket's login after its accept: token expiry, `refresh`, and revocation.

A JWT socket is closed with 4401 once its token expires, unless a `refresh` frame
replaced the token (a timer of the socket's own: it is about this socket alone).
Every authenticated socket joins its user's layer group, and a cookie socket its
browser session's too, so that a user deactivated or a session logged out through
Django (accounts.signals.login_revoked, sent on any instance or by a command)
closes it with 4401 on every instance.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import BaseChannelLayer, get_channel_layer
from django.db import transaction

from accounts import tokens
from accounts.middleware import Login
from ops.redis_client import warn_shared_failure
from realtime.groups import session_group, user_group

logger = logging.getLogger(__name__)

# The layer event that closes a socket whose login was revoked (ChatConsumer).
REVOKED_EVENT = "auth.revoked"
# Publishes started from inside an event loop, kept until done (asyncio keeps
# only weak references to tasks).
_pending: set[asyncio.Task] = set()


class LoginWatch:
    """One socket's login: its groups and, for a JWT socket, its expiry timer."""

    def __init__(self) -> None:
        self.user_id: Any = None
        self.expires_at: int | None = None  # None: not a JWT socket
        self.groups: list[str] = []
        self.joined: list[str] = []
        self._on_expiry: Callable[[], Awaitable[None]] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task | None = None

    def start(self, login: Login) -> None:
        """An authenticated socket's login: whose, and what it hangs on."""
        self.user_id = login.user.pk
        self.expires_at = login.expires_at
        self.groups = [user_group(self.user_id)]
        if login.session_key:
            self.groups.append(session_group(login.session_key))

    async def join(self, layer: BaseChannelLayer, channel: str) -> None:
        """Join the user's (and session's) groups: revocations reach us from now."""
        for group in self.groups:
            await layer.group_add(group, channel)
            self.joined.append(group)

    def arm(self, on_expiry: Callable[[], Awaitable[None]]) -> None:
        """Run on_expiry once the token expires (never for a cookie socket)."""
        self._on_expiry = on_expiry
        self._schedule()

    def refresh(self, token: str) -> datetime | None:
        """Replace a JWT socket's token by a valid one of the same user: its exp."""
        claims = tokens.token_claims(token)
        if self.expires_at is None or claims is None:
            return None
        if str(claims.user_id) != str(self.user_id):
            return None
        self.expires_at = claims.expires_at
        self._schedule()
        return datetime.fromtimestamp(claims.expires_at, tz=UTC)

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.expires_at is None or self._on_expiry is None:
            return
        # PyJWT treats a token as expired from its exp on.
        delay = max(0.0, self.expires_at - time.time())
        self._timer = asyncio.get_running_loop().call_later(delay, self._expired)

    def _expired(self) -> None:
        assert self._on_expiry is not None
        self._timer = None
        self._task = asyncio.get_running_loop().create_task(self._on_expiry())

    async def end(self, layer: BaseChannelLayer | None, channel: str) -> None:
        """The socket is finished: stop the timer, leave the groups (best effort)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        groups, self.joined = self.joined, []
        if layer is None:
            return
        for group in groups:
            try:
                await layer.group_discard(group, channel)
            except Exception as exc:
                # The entry expires by itself (group_expiry); see chat/sockets.py.
                warn_shared_failure(
                    logger,
                    exc,
                    "group_discard_failed group=%s",
                    group,
                    extra={"event": "group_discard_failed"},
                )


def login_revoked_publish(
    sender: Any, *, user_id: Any = None, session_key: str | None = None, **kwargs: Any
) -> None:
    """accounts.signals.login_revoked: close the sockets it names, on every instance."""
    groups = [user_group(user_id)] if user_id is not None else []
    if session_key:
        groups.append(session_group(session_key))
    if groups:
        # After the commit: a rolled-back deactivation closes nothing.
        transaction.on_commit(lambda: _publish(groups))


def _publish(groups: list[str]) -> None:
    """group_send the revocation from sync code, or as a task inside a loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is None:
        # A sync view (its thread's async_to_sync hops back to the server's loop),
        # a command, the admin.
        async_to_sync(_send_all)(groups)
        return
    # async_to_sync refuses to run in an event loop's own thread.
    # https://docs.djangoproject.com/en/5.2/topics/async/#async-to-sync
    task = loop.create_task(_send_all(groups))
    _pending.add(task)
    task.add_done_callback(_pending.discard)


async def _send_all(groups: list[str]) -> None:
    layer = get_channel_layer()
    for group in groups:
        try:
            await layer.group_send(group, {"type": REVOKED_EVENT})
        except Exception as exc:
            # Redis unreachable: the sockets stay open until they reconnect (and
            # are refused then). Not the caller's failure: never a 500 for it.
            warn_shared_failure(
                logger,
                exc,
                "login_revoke_failed group=%s",
                group,
                extra={"event": "login_revoke_failed"},
            )
