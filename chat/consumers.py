"""The chat WebSocket consumer: parse and validate, call a service, send."""

import asyncio
import contextlib
import enum
import logging
import time
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from accounts.middleware import scope_login
from chat import protocol, sockets
from chat.delivery import OrderedDelivery
from chat.limits import UserLimits
from chat.logins import LoginWatch
from chat.protocol import Close, ConnectError, FrameError
from chat.ratelimit import RefusalWindow, TokenBucket
from chat.replays import ReplayGate, replay_cost
from chat.services import ThreadForbidden, ThreadQuotaExceeded
from chat.sockets import SocketContext
from chat.typing import typing_forward, typing_frame
from ops import metrics
from ops.admission import accepted_subprotocol
from ops.db import DatabaseUnavailable
from ops.redis_client import REDIS_UNREACHABLE as LAYER_ERRORS
from sessions_app.services import SessionForbidden

logger = logging.getLogger(__name__)

try:  # Other ASGI servers signal a vanished client with their own exceptions.
    from websockets.exceptions import ConnectionClosed as _WsClosed
except ImportError:  # pragma: no cover
    _WsClosed = OSError
CLIENT_GONE = (OSError, _WsClosed)
try:  # Daphne (autobahn) refuses to send once the closing handshake has begun.
    from autobahn.exception import Disconnected as _AutobahnDisconnected
except ImportError:  # pragma: no cover
    _AutobahnDisconnected = _WsClosed
CLIENT_CLOSING = (_AutobahnDisconnected,)


class State(enum.Enum):
    """Where a socket is in its life; it only ever moves down this list."""

    NEW = "new"  # no websocket.connect handled yet: nothing sent, nothing to undo
    CONNECTING = "connecting"  # accepted; session, replay and presence under way
    OPEN = "open"  # established: client frames are processed
    CLOSING = "closing"  # the server chose a close code: nothing else is sent
    CLOSED = "closed"  # finished: recorded, its cleanup handed over


ENDING = (State.CLOSING, State.CLOSED)
# How long a socket whose channel could not be made waits for its websocket.connect.
LAYER_LOST_CONNECT_WAIT_S = 5.0
RATE_LIMITED = "too many frames; slow down"


class ChatConsumer(AsyncWebsocketConsumer):
    """One socket of one user in one thread (PROTOCOL.md §2)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state = State.NEW
        self.ctx = SocketContext()
        self.login = LoginWatch()
        self.delivery = OrderedDelivery(self.send_json)
        self.bucket = TokenBucket(settings.WS_RATE_LIMIT, settings.WS_RATE_LIMIT * 2)
        self.refusals = RefusalWindow(settings.WS_RATE_LIMIT_CLOSE_AFTER)
        self.replays = ReplayGate()
        self.limits = UserLimits()

    # --- Channels plumbing -----------------------------------------------------------

    async def __call__(self, scope, receive, send):
        # Kept: without it, Redis loss or SIGTERM ends the app: no 1013/1012, no record.
        try:
            await super().__call__(scope, receive, send)
        except LAYER_ERRORS as exc:
            if self.state is State.NEW:
                # Lost before dispatch began (the pubsub layer subscribes the new
                # channel in Redis first): answer the handshake here.
                return await self.refuse_layer_at_open(exc, receive, send)
            await self.layer_lost(exc)
        except asyncio.CancelledError:
            # Daphne cancels every app at shutdown (SIGTERM), and any app that
            # outlives --application-close-timeout after its disconnect.
            logger.info(
                "ws_cancelled session_id=%s",
                self.ctx.session_id,
                extra={"event": "ws_cancelled"},
            )
            if self.state is State.NEW:
                await self.shutdown_before_connect(send)
            elif self.state is not State.CLOSED:
                await self.shutdown_close()
            raise

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Kept: without it, a thread hop per frame; a handler error: no 1011, no record.
        try:
            handler = getattr(self, get_handler_name(message), None)
            if handler is None:
                raise ValueError(f"No handler for message type {message['type']}")
            await handler(message)
        except (StopConsumer, asyncio.CancelledError):
            raise
        except LAYER_ERRORS as exc:
            await self.layer_lost(exc)
            raise StopConsumer() from None
        except CLIENT_CLOSING:
            # The client closed while we were sending: Daphne delivers its
            # websocket.disconnect next, which finishes the socket. Not a fault.
            return
        except CLIENT_GONE:
            # The client vanished while we were sending: a disconnect, not a fault.
            await self.finish(protocol.ABNORMAL)
            raise StopConsumer() from None
        except Exception:
            logger.exception(
                "ws_unhandled_exception session_id=%s",
                self.ctx.session_id,
                extra={"event": "ws_unhandled_exception"},
            )
            await self.end(Close.SERVER_ERROR, CLIENT_GONE)
            raise StopConsumer() from None

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        # Kept: without it, a hop to one shared thread per close (a storm queues there).
        await self.finish(message["code"])
        raise StopConsumer()

    # --- lifecycle -------------------------------------------------------------------

    async def connect(self) -> None:
        self.state = State.CONNECTING
        self.ctx.start(channel=self.channel_name, layer=self.channel_layer, user=None)
        # Accept first, even to refuse, and before the user lookup (it can wait on
        # the DB): the client can only read a close code after the handshake
        # (PROTOCOL.md §2); a refused or timed-out handshake shows it 1006.
        await self.accept(accepted_subprotocol(self.scope))
        if not await self.admit():
            return
        await self.login.join(self.channel_layer, self.channel_name)
        try:
            opened = await sockets.socket_join(ctx=self.ctx)
        except DatabaseUnavailable:
            return await self.refuse_db_unavailable()
        except (SessionForbidden, ThreadForbidden):
            return await self.refuse(Close.FORBIDDEN)
        except ThreadQuotaExceeded:
            return await self.refuse(Close.TOO_MANY)  # over THREAD_CREATE_LIMIT
        hello = protocol.established_frame(self.ctx, opened, settings.INSTANCE_ID)
        await self.send_json(hello)
        await self.delivery.replay(opened.replay)
        present = await sockets.socket_attach(ctx=self.ctx)
        frame = protocol.presence_frame(self.ctx.thread_id, present, [])
        await self.send_json(frame)
        sockets.socket_ready()
        self.state = State.OPEN
        self.login.arm(self.token_expired)

    async def admit(self) -> bool:
        """Check the URL and the scope; refuse the socket (False) if it cannot open."""
        session_id = self.scope.get("url_route", {}).get("kwargs", {}).get("session_id")
        try:
            self.ctx.params = protocol.parse_connect(
                session_id or "", self.scope.get("query_string", b"")
            )
        except ConnectError as exc:
            await self.refuse(exc.close_code)
            return False
        login = await scope_login(self.scope)
        if self.scope.get("db_unavailable"):
            await self.refuse_db_unavailable()
            return False
        self.ctx.user = login.user
        if not self.ctx.authenticated:
            await self.refuse(Close.UNAUTHENTICATED)
            return False
        if not await self.limits.open(self.ctx.username, self.channel_name):
            await self.refuse(Close.TOO_MANY)  # over WS_MAX_SOCKETS_PER_USER
            return False
        self.login.start(login)
        return True

    async def finish(self, code: int | None, *, local_timer: bool = True) -> None:
        """Once per socket, whatever ended it: the close service does the rest."""
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self.replays.cancel()
        await self.limits.close()
        # ctx.channel, not channel_name: unset when the channel could not be made.
        await self.login.end(
            None if self.ctx.layer_down else self.ctx.layer, self.ctx.channel
        )
        await sockets.socket_close(
            ctx=self.ctx, client_code=code, local_timer=local_timer
        )

    def closing(self, code: int) -> None:
        """The server chose to close with `code`: only the close is sent from now."""
        self.ctx.close_code = code
        if self.state is not State.CLOSED:
            self.state = State.CLOSING

    async def refuse(self, code: int) -> None:
        """Close an accepted socket with the server's code; the client's ack ends it."""
        self.closing(code)
        await self.close(code)

    async def refuse_db_unavailable(self, frame_id: str | None = None) -> None:
        """The DB stayed down through every retry: error frame, then 1013."""
        self.ctx.db_down = True
        await self.send_error("db_unavailable", "database unavailable", frame_id)
        await self.refuse(Close.TRY_AGAIN_LATER)

    async def end(self, code: int, gone: tuple[type[BaseException], ...]) -> None:
        """Close with `code` and finish now (a close failing with `gone` is moot)."""
        self.closing(code)
        with contextlib.suppress(*gone):
            await self.close(code)
        await self.finish(code)

    async def layer_lost(self, exc: Exception) -> None:
        """Redis (channel layer) unreachable: close 1013, the client resumes later."""
        # A WARNING without traceback: an outage readiness reports; per-socket ERRORs
        # would drown it. Group and presence entries expire by TTL.
        logger.warning(
            "channel_layer_unavailable session_id=%s error=%s",
            self.ctx.session_id,
            exc,
            extra={"event": "channel_layer_unavailable"},
        )
        if self.state is State.NEW:
            return  # lost before websocket.connect: nothing was opened
        self.ctx.layer_down = True
        if self.state is not State.CLOSING:
            with contextlib.suppress(*CLIENT_GONE, *CLIENT_CLOSING):
                await self.send_error("layer_unavailable", "channel layer unavailable")
        await self.end(Close.TRY_AGAIN_LATER, (*CLIENT_GONE, *CLIENT_CLOSING))

    async def refuse_layer_at_open(self, exc: Exception, receive, send) -> None:
        """Redis lost before the socket was set up: accept, layer_unavailable, 1013."""
        self.base_send = send  # Channels sets it only after the channel exists
        try:
            message = await asyncio.wait_for(receive(), LAYER_LOST_CONNECT_WAIT_S)
        except TimeoutError:
            return
        if message["type"] != "websocket.connect":
            return  # the client left before its handshake reached us
        self.state = State.CONNECTING
        self.ctx.start(channel="", layer=None, user=None)
        self.ctx.layer_down = True
        await self.accept(accepted_subprotocol(self.scope))
        with contextlib.suppress(ConnectError):
            self.ctx.params = protocol.parse_connect(
                self.scope.get("url_route", {}).get("kwargs", {}).get("session_id")
                or "",
                self.scope.get("query_string", b""),
            )
        await self.layer_lost(exc)

    async def shutdown_before_connect(self, send) -> None:
        """Cancelled before its websocket.connect was handled: accept, then 1012."""
        # The handshake is still pending (Daphne queues websocket.connect with the
        # app): answered, the client reads 1012 and reconnects elsewhere at once.
        subprotocol = accepted_subprotocol(self.scope)
        try:
            await send({"type": "websocket.accept", "subprotocol": subprotocol})
            await send({"type": "websocket.close", "code": Close.SERVICE_RESTART})
        except Exception:  # the client may be gone already; we are exiting anyway
            logger.debug("close 1012 before connect not sent", exc_info=True)

    async def shutdown_close(self) -> None:
        """Server going away: close 1012 so the client reconnects elsewhere at once."""
        self.closing(Close.SERVICE_RESTART)
        try:
            await asyncio.wait_for(self.close(Close.SERVICE_RESTART), 1.0)
        except Exception:  # the transport may already be gone; we are exiting anyway
            logger.debug("close 1012 not sent", exc_info=True)
        # Bounded: the process is exiting. No local timer: the shared detach marker
        # lets another instance's sweep (or reap_sessions) finish the cleanup.
        try:
            finished = self.finish(Close.SERVICE_RESTART, local_timer=False)
            await asyncio.wait_for(finished, 3.0)
        except (Exception, asyncio.CancelledError):
            logger.warning(
                "shutdown_cleanup_incomplete session_id=%s",
                self.ctx.session_id,
                exc_info=True,
                extra={"event": "shutdown_cleanup_incomplete"},
            )

    # --- client frames ---------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None):
        if self.state is not State.OPEN:
            return
        if protocol.too_big(text_data, bytes_data, settings.WS_MAX_MESSAGE_BYTES):
            return await self.refuse(Close.MESSAGE_TOO_BIG)
        if not self.bucket.take() or not await self.limits.frame_allowed():
            return await self.rate_limited(protocol.chat_message_id(text_data))
        if text_data is None:
            return await self.send_error("bad_frame", "binary frames are not supported")
        try:
            frame = protocol.parse_frame(text_data)
        except FrameError as exc:
            return await self.send_error(exc.code, exc.detail, exc.frame_id)
        if isinstance(frame, protocol.ChatMessageFrame):
            await self.on_chat_message(frame)
        elif isinstance(frame, protocol.PingFrame):
            await self.send_json({"type": "pong", "ts": frame.ts})
        elif isinstance(frame, protocol.RefreshFrame):
            await self.on_refresh(frame)
        elif isinstance(frame, protocol.TypingFrame):
            await typing_forward(
                layer=self.channel_layer,
                thread_id=self.ctx.thread_id,
                username=self.ctx.username,
            )
        else:
            await self.on_resume(frame)

    async def on_chat_message(self, frame: protocol.ChatMessageFrame) -> None:
        started = time.perf_counter()
        try:
            result = await sockets.message_post(
                ctx=self.ctx, client_id=frame.id, text=frame.text
            )
        except DatabaseUnavailable:
            return await self.refuse_db_unavailable(frame.id)
        except ThreadForbidden:
            # Removed from the private thread while connected: as at connect.
            return await self.refuse(Close.FORBIDDEN)
        seq, duplicate = result.message.seq, result.duplicate
        ack = {"type": "ack", "id": frame.id, "seq": seq, "duplicate": duplicate}
        await self.send_json(ack)
        metrics.MESSAGE_LATENCY.observe(time.perf_counter() - started)

    async def rate_limited(self, frame_id: str | None = None) -> None:
        """Refuse a frame as `rate_limited`; too many refusals close with 1008."""
        if self.refusals.refuse():
            return await self.refuse(Close.POLICY_VIOLATION)
        await self.send_error("rate_limited", RATE_LIMITED, frame_id)

    async def on_resume(self, frame: protocol.ResumeFrame) -> None:
        if self.replays.busy:
            return await self.rate_limited()  # at most one replay in flight
        self.replays.start(self.resume(frame))

    async def resume(self, frame: protocol.ResumeFrame) -> None:
        """A resume's replay, run by the ReplayGate beside the frame loop."""
        try:
            replay = await self.delivery.window(
                self.ctx.thread_id, frame.last_seq, frame.epoch
            )
            if self.state is not State.OPEN:
                return
            # The frame paid one token on arrival; the rest of its cost now.
            if not self.bucket.take(replay_cost(len(replay.messages)) - 1):
                return await self.rate_limited()
            await self.send_json(protocol.resumed_frame(replay))
            await self.delivery.replay(replay)
        except DatabaseUnavailable:
            with contextlib.suppress(*CLIENT_GONE, *CLIENT_CLOSING):
                await self.refuse_db_unavailable()
        except (*CLIENT_GONE, *CLIENT_CLOSING):
            pass  # the client left: its websocket.disconnect finishes the socket
        except Exception:
            logger.exception(
                "ws_replay_failed session_id=%s",
                self.ctx.session_id,
                extra={"event": "ws_replay_failed"},
            )
            await self.end(Close.SERVER_ERROR, (*CLIENT_GONE, *CLIENT_CLOSING))

    async def on_refresh(self, frame: protocol.RefreshFrame) -> None:
        expires_at = self.login.refresh(frame.token)
        if expires_at is None:
            detail = "token invalid, expired, or not this socket's user"
            return await self.send_error("bad_token", detail)
        await self.send_json(protocol.refreshed_frame(expires_at))

    async def token_expired(self) -> None:
        """The JWT's exp passed without a refresh (a timer's task): close 4401."""
        if self.state is State.OPEN:
            with contextlib.suppress(*CLIENT_GONE, *CLIENT_CLOSING):
                await self.refuse(Close.UNAUTHENTICATED)

    # --- group messages --------------------------------------------------------------

    async def auth_revoked(self, event: dict[str, Any]) -> None:
        """The user was deactivated or the browser session logged out (any instance)."""
        if self.state is State.OPEN:
            await self.refuse(Close.UNAUTHENTICATED)

    async def chat_message(self, event: dict[str, Any]) -> None:
        """A live message of the thread, from any instance."""
        if self.state in ENDING:
            return
        await self.replays.wait()  # live frames follow a replay in flight
        try:
            await self.delivery.live(event)
        except DatabaseUnavailable:
            # Never skip a seq: the client reconnects and resumes from its last.
            await self.refuse_db_unavailable()

    async def chat_messages(self, event: dict[str, Any]) -> None:
        """Live messages of the thread from one commit (chat.commits), in seq order."""
        for frame in event["messages"]:
            await self.chat_message(frame)

    async def chat_sync(self, event: dict[str, Any]) -> None:
        """Redis came back: send what the layer may have dropped, from the database."""
        if self.state is not State.OPEN:
            return
        await self.replays.wait()
        try:
            recovered = await self.delivery.resync(self.ctx.thread_id)
        except DatabaseUnavailable:
            return await self.refuse_db_unavailable()  # the client resumes later
        if not recovered:
            # Too many to push: the client resumes, then fetches over HTTP.
            await self.refuse(Close.TRY_AGAIN_LATER)

    async def presence(self, event: dict[str, Any]) -> None:
        """A join or leave in the thread (the joining socket got the full list)."""
        if event.get("origin") == self.channel_name or self.state in ENDING:
            return
        frame = protocol.presence_frame(
            event["thread_id"], event["joins"], event["leaves"]
        )
        await self.send_json(frame)

    async def chat_typing(self, event: dict[str, Any]) -> None:
        """Someone in the thread is typing: shown to the other users only."""
        if self.state is not State.OPEN or event["user"] == self.ctx.username:
            return
        await self.send_json(typing_frame(event))

    async def send_error(
        self, code: str, detail: str, frame_id: str | None = None
    ) -> None:
        await self.send_json(protocol.error_frame(code, detail, frame_id))

    async def send_json(self, data: dict[str, Any]) -> None:
        await self.send(text_data=protocol.dumps(data))
