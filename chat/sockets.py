"""Opening and closing a chat socket: the services behind the consumer's lifecycle.

Opening joins the thread's layer group, then makes one DB call (thread, session,
connect event, replay) shared with the sockets opening at the same time
(chat/connects.py), then enters presence. Closing writes the ws_disconnect
record, the shared figures and metrics, leaves the group and presence, and records
the close in the DB: once per socket, whatever ended it.
"""

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from channels.layers import BaseChannelLayer
from django.conf import settings

from chat import commits
from chat.connects import (
    SocketOpen,
    SocketOpened,
    socket_open_batched,
)
from chat.disconnects import log_disconnect
from chat.protocol import (
    ABNORMAL,
    Close,
    ConnectParams,
    metric_outcome,
    metric_reason,
    reason_for,
)
from chat.services import MessageResult
from ops import metrics
from ops.db import DatabaseUnavailable
from ops.redis_client import warn_shared_failure
from realtime import figures
from realtime.groups import thread_group
from sessions_app import cleanup
from sessions_app.reaper import ensure_sweeper
from sessions_app.services import SocketClosed

logger = logging.getLogger(__name__)


@dataclass
class SocketContext:
    """One socket: what it asked for and what was set up for it (its close reads it)."""

    channel: str = ""
    layer: BaseChannelLayer | None = None  # the consumer's channel layer
    user: Any = None  # the scope's user, anonymous or None when not authenticated
    opened_at: float = 0.0
    params: ConnectParams | None = None  # None until the URL is parsed and valid
    close_code: int | None = None  # the server's, once it chose to close
    group: str | None = None  # the thread's layer group, once joining it
    attached: bool = False  # in presence: a detach is owed
    db_down: bool = False  # refused for the DB: nothing can be recorded
    layer_down: bool = False  # Redis lost: no group or presence calls

    def start(self, *, channel: str, layer: BaseChannelLayer, user: Any) -> None:
        """websocket.connect arrived: the socket's life is measured from now."""
        self.channel, self.layer, self.user = channel, layer, user
        self.opened_at = time.monotonic()

    @property
    def authenticated(self) -> bool:
        """Whether the scope names a user (a refused socket's may not)."""
        return self.user is not None and self.user.is_authenticated

    @property
    def username(self) -> str:
        """The authenticated user's name, or "" for a refused socket."""
        return self.user.get_username() if self.authenticated else ""

    @property
    def session_id(self) -> str:
        """The session id asked for, or "" while the URL is not known valid."""
        return self.params.session_id if self.params else ""

    @property
    def thread_id(self) -> str:
        """The thread asked for, or "" while the URL is not known valid."""
        return self.params.thread_id if self.params else ""


async def socket_join(*, ctx: SocketContext) -> SocketOpened:
    """Join the thread's layer group, then open the session and read the replay."""
    assert ctx.params is not None
    # Join before reading the thread's seq: anything committed later reaches us
    # through the group, anything earlier through the replay; seq dedups overlaps.
    ctx.group = thread_group(ctx.params.thread_id)
    await ctx.layer.group_add(ctx.group, ctx.channel)
    # One DB round with the other sockets opening now (chat/connects.py).
    request = SocketOpen(
        session_id=ctx.params.session_id,
        user=ctx.user,
        thread_id=ctx.params.thread_id,
        instance=settings.INSTANCE_ID,
        after_seq=ctx.params.last_seq,
        epoch=ctx.params.epoch,
    )
    return await socket_open_batched(request)


async def socket_attach(*, ctx: SocketContext) -> list[str]:
    """Enter presence (a join when it is the user's first socket); who is here."""
    present = await cleanup.socket_attached(
        thread_id=ctx.thread_id,
        user=ctx.username,
        session_id=ctx.session_id,
        channel=ctx.channel,
    )
    ctx.attached = True
    return present


def socket_ready() -> None:
    """Count an established socket; make sure this process sweeps dead instances."""
    metrics.CONNECTS.labels(outcome="accepted").inc()
    ensure_sweeper()


async def message_post(
    *, ctx: SocketContext, client_id: str, text: str
) -> MessageResult:
    """Store a socket's message with the next group commit; return once broadcast."""
    # Committed together with the other sockets' messages of the burst (one fsync),
    # then broadcast if new; DatabaseUnavailable when the retry window is spent.
    return await commits.message_commit(
        layer=ctx.layer,
        thread_id=ctx.thread_id,
        user=ctx.user,
        client_id=client_id,
        text=text,
    )


async def socket_close(
    *,
    ctx: SocketContext,
    client_code: int | None,
    local_timer: bool = True,
) -> None:
    """A socket's end: record, figures, metrics, group, presence, DB (call once)."""
    code = ctx.close_code or client_code or 1005
    reason, level = reason_for(code)
    duration_s = time.monotonic() - ctx.opened_at
    frequent = await _count_disconnect(ctx.username, reason, code)
    log_disconnect(
        session_id=ctx.session_id,
        user=ctx.username,
        thread_id=ctx.thread_id,
        code=code,
        reason=reason,
        level=level,
        duration_s=duration_s,
        frequent=frequent,
        by_server=ctx.close_code is not None,
    )
    metrics.DISCONNECTS.labels(reason=metric_reason(code)).inc()
    if not ctx.attached and code != Close.SERVICE_RESTART:
        metrics.CONNECTS.labels(outcome=metric_outcome(code)).inc()
    await _leave_group(ctx)
    if ctx.params is None or ctx.db_down:
        return  # nothing to record, or the DB is known to be down
    if ctx.attached and not ctx.layer_down:
        await cleanup.socket_detached(
            thread_id=ctx.thread_id,
            user=ctx.username,
            session_id=ctx.session_id,
            channel=ctx.channel,
            local_timer=local_timer,
        )
    await _record_close(ctx, code=code, reason=reason, duration_s=duration_s)


async def _record_close(
    ctx: SocketContext, *, code: int, reason: str, duration_s: float
) -> None:
    """The close's ConnectionEvent and last-seen, batched with its burst."""
    closed = SocketClosed(
        session_id=ctx.session_id,
        user=ctx.user,
        thread_id=ctx.thread_id,
        code=code,
        reason=reason,
        duration_s=round(duration_s, 3),
        instance=settings.INSTANCE_ID,
    )
    # On DatabaseUnavailable the retry helper has logged db_unavailable already.
    with contextlib.suppress(DatabaseUnavailable):
        await cleanup.record_close(closed)


async def _count_disconnect(username: str, reason: str, code: int) -> bool:
    """Count the close in the shared figures; whether the user closes frequently."""
    if not username:
        return False
    count = await figures.record_disconnect(username, reason, abnormal=code == ABNORMAL)
    return count >= settings.WS_FREQUENT_DISCONNECTS


async def _leave_group(ctx: SocketContext) -> None:
    """Leave the thread's layer group; a failure only warns (the entry expires)."""
    if not ctx.group or ctx.layer_down:
        return
    try:
        await ctx.layer.group_discard(ctx.group, ctx.channel)
    except Exception as exc:
        # The group entry expires by itself (group_expiry); Redis trouble is
        # reported by readiness, not by every closing socket.
        warn_shared_failure(
            logger,
            exc,
            "group_discard_failed group=%s",
            ctx.group,
            extra={"event": "group_discard_failed"},
        )
