"""The chat WebSocket consumer: parse and validate, call a service, send."""

import asyncio
import contextlib
import logging
import time
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from chat import protocol
from chat.delivery import OrderedDelivery
from chat.disconnects import log_disconnect
from chat.protocol import Close, ConnectError, FrameError
from chat.ratelimit import RefusalWindow, TokenBucket
from chat.services import ThreadForbidden, message_create
from ops import metrics
from ops.db import DatabaseUnavailable, db_call
from ops.redis_client import REDIS_UNREACHABLE, warn_shared_failure
from realtime import figures
from realtime.groups import thread_group
from sessions_app import cleanup
from sessions_app.reaper import ensure_sweeper
from sessions_app.services import SessionForbidden, SocketClosed, session_open

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
LAYER_ERRORS = REDIS_UNREACHABLE


class ChatConsumer(OrderedDelivery, AsyncWebsocketConsumer):
    """One socket of one user in one thread (PROTOCOL.md §2)."""

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        self.opened_at = time.monotonic()
        self.params: protocol.ConnectParams | None = None
        self.server_close_code: int | None = None
        self.finished = False
        self.ready = False
        self.group: str | None = None
        self.attached = False
        self.db_down = False
        self.layer_down = False
        self.last_sent_seq = 0
        self.bucket = TokenBucket(settings.WS_RATE_LIMIT, settings.WS_RATE_LIMIT * 2)
        self.refusals = RefusalWindow(settings.WS_RATE_LIMIT_CLOSE_AFTER)
        await super().websocket_connect(message)

    # --- lifecycle ----------------------------------------------------------------

    async def connect(self) -> None:
        offered = self.scope.get("subprotocols") or []
        # Accept first, even to refuse: the client can only read a close code after
        # the handshake (PROTOCOL.md §2); a refused handshake shows it 1006.
        await self.accept("jwt" if offered[:1] == ["jwt"] else None)
        kwargs = self.scope.get("url_route", {}).get("kwargs", {})
        try:
            self.params = protocol.parse_connect(
                kwargs.get("session_id", ""), self.scope.get("query_string", b"")
            )
        except ConnectError as exc:
            return await self.refuse(exc.close_code)
        if self.scope.get("db_unavailable"):
            return await self.refuse_db_unavailable()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return await self.refuse(Close.UNAUTHENTICATED)
        # Join before reading the thread's seq: anything committed later reaches us
        # through the group, anything earlier through the replay; seq dedups overlaps.
        self.group = thread_group(self.params.thread_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        try:
            opened = await db_call(
                session_open,
                session_id=self.params.session_id,
                user=user,
                thread_id=self.params.thread_id,
                instance=settings.INSTANCE_ID,
                after_seq=self.params.last_seq,
                max_replay=settings.WS_MAX_REPLAY,
                op="session_open",
            )
        except DatabaseUnavailable:
            return await self.refuse_db_unavailable()
        except (SessionForbidden, ThreadForbidden):
            return await self.refuse(Close.FORBIDDEN)
        replay = opened.replay
        await self.send_json(
            {
                "type": "ws:session_established",
                "session_id": self.params.session_id,
                "thread_id": self.params.thread_id,
                "user": user.get_username(),
                "resumed": opened.resumed,
                "last_seq": replay.last_seq,
                "replay": len(replay.messages),
                "recovered": replay.recovered,
                "instance": settings.INSTANCE_ID,
            }
        )
        await self.send_replay(replay)
        present = await cleanup.socket_attached(
            thread_id=self.params.thread_id,
            user=user.get_username(),
            session_id=self.params.session_id,
            channel=self.channel_name,
        )
        self.attached = True
        await self.send_json(
            {
                "type": "presence",
                "thread_id": self.params.thread_id,
                "joins": present,
                "leaves": [],
            }
        )
        metrics.CONNECTS.labels(outcome="accepted").inc()
        ensure_sweeper()
        self.ready = True

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """AsyncWebsocketConsumer's, without its close_old_connections thread hop."""
        # The same hop as in handle(), once per closing socket: 1,000 of them queued
        # on one shared thread in a disconnect storm. self.groups is empty (the
        # thread's group is left in finish()).
        for group in self.groups:
            await self.channel_layer.group_discard(group, self.channel_name)
        await self.disconnect(message["code"])
        raise StopConsumer()

    async def disconnect(self, code: int) -> None:
        await self.finish(code)

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        except LAYER_ERRORS as exc:
            # The channel layer's receive loop lost Redis (channels_redis#256,#406).
            await self.layer_lost(exc)
        except asyncio.CancelledError:
            # Daphne cancels every app at shutdown (SIGTERM), and any app that
            # outlives --application-close-timeout after its disconnect.
            logger.info(
                "ws_cancelled session_id=%s",
                self.params.session_id if getattr(self, "params", None) else "",
                extra={"event": "ws_cancelled"},
            )
            if not getattr(self, "finished", True):
                await self.shutdown_close()
            raise

    async def shutdown_close(self) -> None:
        """Server going away: close 1012 so the client reconnects elsewhere at once."""
        self.server_close_code = Close.SERVICE_RESTART
        try:
            await asyncio.wait_for(self.close(Close.SERVICE_RESTART), 1.0)
        except Exception:  # the transport may already be gone; we are exiting anyway
            logger.debug("close 1012 not sent", exc_info=True)
        # Bounded: the process is exiting. No local timer: the shared detach marker
        # lets another instance's sweep (or reap_sessions) finish the cleanup.
        try:
            await asyncio.wait_for(
                self.finish(Close.SERVICE_RESTART, local_timer=False), 3.0
            )
        except (Exception, asyncio.CancelledError):
            logger.warning(
                "shutdown_cleanup_incomplete session_id=%s",
                self.params.session_id if self.params else "",
                exc_info=True,
                extra={"event": "shutdown_cleanup_incomplete"},
            )

    async def dispatch(self, message: dict[str, Any]) -> None:
        try:
            await self.handle(message)
        except (StopConsumer, asyncio.CancelledError):
            raise
        except LAYER_ERRORS as exc:
            await self.layer_lost(exc)
            raise StopConsumer() from None
        except CLIENT_CLOSING:
            # The client closed (or dropped) while we were sending: nothing more can
            # reach it, and Daphne delivers websocket.disconnect with the client's
            # own close code next, which finishes the socket. Not a fault.
            return
        except CLIENT_GONE:
            # The client vanished while we were sending: a disconnect, not a fault.
            await self.finish(protocol.ABNORMAL)
            raise StopConsumer() from None
        except Exception:
            # channels#1466: when a handler raises, websocket_disconnect may never
            # run, so we log, close with 1011 and finish here ourselves.
            logger.exception(
                "ws_unhandled_exception session_id=%s",
                self.params.session_id if self.params else "",
                extra={"event": "ws_unhandled_exception"},
            )
            self.server_close_code = Close.SERVER_ERROR
            with contextlib.suppress(CLIENT_GONE):
                await self.close(Close.SERVER_ERROR)
            await self.finish(Close.SERVER_ERROR)
            raise StopConsumer() from None

    async def handle(self, message: dict[str, Any]) -> None:
        """AsyncConsumer.dispatch without its per-message close_old_connections hop."""
        # channels 4.2+ runs close_old_connections through sync_to_async before every
        # handler: a thread hop per frame, per socket (1,000 of them to fan out one
        # message, through one shared thread). This consumer never touches the ORM on
        # the loop: db_call's database_sync_to_async already does that housekeeping
        # in the worker thread that holds the connection.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def finish(
        self, client_code: int | None, *, local_timer: bool = True
    ) -> None:
        """Once per socket: the record, metrics, group, presence, session, event."""
        if self.finished:
            return
        self.finished = True
        code = self.server_close_code or client_code or 1005
        username = self.username()
        reason, _ = protocol.reason_for(code)
        frequent = False
        if username:
            count = await figures.record_disconnect(
                username, reason, abnormal=code == protocol.ABNORMAL
            )
            frequent = count >= settings.WS_FREQUENT_DISCONNECTS
        self.log_close(code, frequent=frequent)
        metrics.DISCONNECTS.labels(reason=reason).inc()
        if not self.attached and code != Close.SERVICE_RESTART:
            metrics.CONNECTS.labels(outcome=str(code)).inc()
        if self.group and not self.layer_down:
            try:
                await self.channel_layer.group_discard(self.group, self.channel_name)
            except Exception as exc:
                # The group entry expires by itself (group_expiry); Redis trouble is
                # reported by readiness, not by every closing socket.
                warn_shared_failure(
                    logger,
                    exc,
                    "group_discard_failed group=%s",
                    self.group,
                    extra={"event": "group_discard_failed"},
                )
        if self.params is None or self.db_down:
            return  # nothing to record, or the DB is known to be down
        if self.attached and not self.layer_down:
            await cleanup.socket_detached(
                thread_id=self.params.thread_id,
                user=username,
                session_id=self.params.session_id,
                channel=self.channel_name,
                local_timer=local_timer,
            )
        # On DatabaseUnavailable the retry helper has logged db_unavailable already.
        with contextlib.suppress(DatabaseUnavailable):
            await cleanup.record_close(
                SocketClosed(
                    session_id=self.params.session_id,
                    user=self.scope.get("user"),
                    thread_id=self.params.thread_id,
                    code=code,
                    reason=reason,
                    duration_s=round(time.monotonic() - self.opened_at, 3),
                    instance=settings.INSTANCE_ID,
                )
            )

    def username(self) -> str:
        """The authenticated user's name, or "" for a refused socket."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return ""
        return user.get_username()

    def log_close(self, code: int, *, frequent: bool = False) -> str:
        """Emit the ws_disconnect record; return the reason name."""
        return log_disconnect(
            session_id=self.params.session_id if self.params else "",
            user=self.username(),
            thread_id=self.params.thread_id if self.params else "",
            code=code,
            duration_s=time.monotonic() - self.opened_at,
            frequent=frequent,
            by_server=self.server_close_code is not None,
        )

    async def layer_lost(self, exc: Exception) -> None:
        """Redis (channel layer) unreachable: close 1013, the client resumes later.

        A WARNING without traceback: an infrastructure outage that readiness reports;
        per-socket ERRORs would drown it. Group and presence entries expire by TTL.
        """
        logger.warning(
            "channel_layer_unavailable session_id=%s error=%s",
            self.params.session_id if getattr(self, "params", None) else "",
            exc,
            extra={"event": "channel_layer_unavailable"},
        )
        if not hasattr(self, "finished"):
            return  # lost before websocket.connect: nothing was opened
        self.layer_down = True
        self.server_close_code = Close.TRY_AGAIN_LATER
        with contextlib.suppress(*CLIENT_GONE, *CLIENT_CLOSING):
            await self.close(Close.TRY_AGAIN_LATER)
        await self.finish(Close.TRY_AGAIN_LATER)

    async def refuse(self, code: int) -> None:
        """Close an accepted socket with a refusal code."""
        self.server_close_code = code
        await self.close(code)

    async def refuse_db_unavailable(self) -> None:
        """The DB stayed down through every retry: error frame, then 1013."""
        self.db_down = True
        await self.send_json(
            protocol.error_frame("db_unavailable", "database unavailable")
        )
        await self.refuse(Close.TRY_AGAIN_LATER)

    # --- client frames --------------------------------------------------------------

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None
    ):
        if not self.ready or self.server_close_code:
            return
        size = len(bytes_data) if text_data is None else len(text_data)
        if text_data is not None and size * 4 > settings.WS_MAX_MESSAGE_BYTES:
            size = len(text_data.encode("utf-8", "surrogatepass"))
        if size > settings.WS_MAX_MESSAGE_BYTES:
            return await self.refuse(Close.MESSAGE_TOO_BIG)
        if not self.bucket.take():
            if self.refusals.refuse():
                return await self.refuse(Close.POLICY_VIOLATION)
            return await self.send_error("rate_limited", "too many frames; slow down")
        if text_data is None:
            return await self.send_error("bad_frame", "binary frames are not supported")
        try:
            frame = protocol.parse_frame(text_data)
        except FrameError as exc:
            return await self.send_error(exc.code, exc.detail)
        if isinstance(frame, protocol.ChatMessageFrame):
            await self.on_chat_message(frame)
        elif isinstance(frame, protocol.PingFrame):
            await self.send_json({"type": "pong", "ts": frame.ts})
        else:
            await self.on_resume(frame)

    async def on_chat_message(self, frame: protocol.ChatMessageFrame) -> None:
        assert self.params is not None
        started = time.perf_counter()
        try:
            result = await db_call(
                message_create,
                thread_id=self.params.thread_id,
                user=self.scope["user"],
                client_id=frame.id,
                text=frame.text,
                op="message_create",
            )
        except DatabaseUnavailable:
            return await self.refuse_db_unavailable()
        message = result.message
        if not result.duplicate:
            await self.broadcast(protocol.message_frame(message))
        await self.send_json(
            {
                "type": "ack",
                "id": frame.id,
                "seq": message.seq,
                "duplicate": result.duplicate,
            }
        )
        metrics.MESSAGE_LATENCY.observe(time.perf_counter() - started)

    async def on_resume(self, frame: protocol.ResumeFrame) -> None:
        replay = await self.load_replay(frame.last_seq)
        if replay is None:
            return
        await self.send_json(
            {
                "type": "resumed",
                "replay": len(replay.messages),
                "recovered": replay.recovered,
            }
        )
        await self.send_replay(replay)

    async def broadcast(self, frame: dict[str, Any]) -> None:
        """Send a stored message to every socket of the thread, on every instance."""
        try:
            await self.channel_layer.group_send(self.group, frame)
        except Exception as exc:
            # Stored is stored: receivers fill the gap by seq (next message or resume).
            warn_shared_failure(
                logger,
                exc,
                "broadcast_failed thread_id=%s seq=%s",
                frame["thread_id"],
                frame["seq"],
                extra={"event": "broadcast_failed"},
            )

    # --- group messages -------------------------------------------------------------

    async def presence(self, event: dict[str, Any]) -> None:
        """A join or leave in the thread (the joining socket got the full list)."""
        if event.get("origin") == self.channel_name or self.server_close_code:
            return
        await self.send_json(
            {
                "type": "presence",
                "thread_id": event["thread_id"],
                "joins": event["joins"],
                "leaves": event["leaves"],
            }
        )

    # --- helpers --------------------------------------------------------------------

    async def send_error(self, code: str, detail: str) -> None:
        await self.send_json(protocol.error_frame(code, detail))

    async def send_json(self, data: dict[str, Any]) -> None:
        await self.send(text_data=protocol.dumps(data))
