"""Daphne 4.2: protocol-level closes with their codes, and a bound on unread bytes.

autobahn fails a connection whose message is over maxMessagePayloadSize or
maxFramePayloadSize (1009) or whose text frame is not UTF-8 (1007). Its server
default `failByDrop` drops the TCP connection instead of sending that code, and
Daphne then hands the application 1006, which the ws_disconnect record logs as a
network drop. PROTOCOL.md §2 wants the client to read 1009 or 1007.

1. Every Daphne WebSocketFactory is made with failByDrop off: autobahn sends the
   close frame and drops the TCP connection only if the client does not answer
   within its close handshake timeout
   (https://autobahn.readthedocs.io/en/latest/websocket/programming.html, options).
   That timeout is 10 s (the websockets library's close_timeout), not autobahn's
   1 s: the drop is an abort, which throws away what Twisted has not written yet.
   Under load a socket refused as `overloaded` often had its whole answer (HTTP
   101, error frame, 1013) still unwritten after a second: in one storm of 2,000
   clients retrying fast, 3,447 of 12,493 attempts read EOF instead of an HTTP
   response and retried at once instead of after retry_after_ms; none with 10 s.
2. WebSocketProtocol.onClose reports the code autobahn failed the connection with
   (`failedByMe`), or 4408 after (3), whatever the client answered or did not.
3. WebSocketProtocol.serverSend refuses to queue more for a client that does not
   read. ASGI gives the application no view of the write buffer, and Twisted's
   transport.write always accepts and buffers in memory: a client that stops
   reading made Daphne hold every frame sent to it. Before each send, the bytes
   Twisted still holds for the socket (its `dataBuffer` from `offset`, plus the
   writes not yet moved there) are compared with WS_MAX_PENDING_BYTES; over it,
   the writes not yet moved (whole frames) are dropped, a 4408 close is queued,
   and autobahn's close handshake timeout drops the connection if the client
   still does not read. Later sends to it are dropped.
4. Server.handle_reply (the application's `send`) waits, before a websocket.send,
   while more than WS_MAX_PENDING_BYTES is held for the socket: a client that
   reads slowly paces the application (a 4 MB replay is not a slow consumer), and
   only one that reads nothing for DRAIN_TIMEOUT_S meets (3).
"""

import asyncio
import logging
from typing import Any

from django.conf import settings

from emergence.compat import guard

logger = logging.getLogger(__name__)
SLOW_CONSUMER = 4408
# How long a send waits for a client to read before (3) calls it a slow consumer.
DRAIN_TIMEOUT_S = 2.0
DRAIN_POLL_S = 0.01
# How long a client gets to answer the server's close before its TCP is aborted.
CLOSE_HANDSHAKE_TIMEOUT_S = 10

# The daphne release series this was written for.
SERIES = "4.2"


def apply() -> None:
    """Apply both changes once, after the guard; no-op without Daphne."""
    try:
        from daphne.server import Server
        from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
    except ImportError:  # another ASGI server: nothing to patch
        return
    check_targets(WebSocketFactory, WebSocketProtocol)
    guard.require(
        Server,
        "handle_reply",
        patch=__name__,
        parameters=("self", "protocol", "message"),
    )
    if all(
        is_patched(f)
        for f in (
            WebSocketFactory.__init__,
            WebSocketProtocol.onClose,
            WebSocketProtocol.serverSend,
            Server.handle_reply,
        )
    ):
        return
    if not guard.version_matches("daphne", SERIES, __name__):
        return
    close_instead_of_drop(WebSocketFactory)
    report_failure_code(WebSocketProtocol)
    bound_pending_bytes(WebSocketProtocol)
    wait_for_readers(Server)


def check_targets(factory: type, protocol: type) -> None:
    """The methods and options both changes rely on, with the expected shape."""
    guard.require(
        factory,
        "__init__",
        patch=__name__,
        parameters=("self", "server_class", "args", "kwargs"),
    )
    guard.require(
        factory,
        "setProtocolOptions",
        patch=__name__,
        parameters=("self", "failByDrop", "closeHandshakeTimeout"),
        exact=False,
    )
    guard.require(
        protocol,
        "onClose",
        patch=__name__,
        parameters=("self", "wasClean", "code", "reason"),
    )
    guard.require(
        protocol,
        "serverSend",
        patch=__name__,
        parameters=("self", "content", "binary"),
    )
    from twisted.internet.abstract import FileDescriptor

    # _tempDataBuffer and _tempDataLen are set per instance (FileDescriptor.__init__).
    for buffer_attribute in ("dataBuffer", "offset", "SEND_LIMIT"):
        guard.require(FileDescriptor, buffer_attribute, patch=__name__)


def is_patched(function: Any) -> bool:
    """True for a replacement made by this module."""
    return getattr(function, "emergence_patched", False)


def close_instead_of_drop(factory: type) -> None:
    """Replace WebSocketFactory.__init__: failByDrop off, 10 s to answer a close."""
    original = factory.__init__
    if is_patched(original):
        return

    def __init__(self, server_class, *args, **kwargs):  # noqa: N807
        original(self, server_class, *args, **kwargs)
        self.setProtocolOptions(
            failByDrop=False, closeHandshakeTimeout=CLOSE_HANDSHAKE_TIMEOUT_S
        )

    __init__.emergence_patched = True
    factory.__init__ = __init__


def report_failure_code(protocol: type) -> None:
    """Replace WebSocketProtocol.onClose: the code autobahn failed it with."""
    original = protocol.onClose
    if is_patched(original):
        return

    def on_close(self, wasClean, code, reason):  # noqa: N803
        failed_with = getattr(self, "localCloseCode", None)
        if getattr(self, "emergence_slow_consumer", False):
            code = SLOW_CONSUMER
        elif getattr(self, "failedByMe", False) and failed_with:
            code = failed_with
        original(self, wasClean, code, reason)

    on_close.emergence_patched = True
    protocol.onClose = on_close


def pending_bytes(transport: Any) -> int:
    """Bytes a Twisted transport holds in memory, not yet written to the kernel."""
    held = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
    return held + getattr(transport, "_tempDataLen", 0)


def bound_pending_bytes(protocol: type) -> None:
    """Replace WebSocketProtocol.serverSend: close 4408 over WS_MAX_PENDING_BYTES."""
    original = protocol.serverSend
    if is_patched(original):
        return

    def server_send(self, content, binary=False):
        if getattr(self, "emergence_slow_consumer", False):
            return  # closing: the client reads nothing more from us
        transport = self.transport
        if pending_bytes(transport) > settings.WS_MAX_PENDING_BYTES:
            return close_slow_consumer(self, transport)
        original(self, content, binary)

    server_send.emergence_patched = True
    protocol.serverSend = server_send


def close_slow_consumer(protocol: Any, transport: Any) -> None:
    """Drop the frames not yet in the send buffer and queue a 4408 close."""
    protocol.emergence_slow_consumer = True
    dropped = getattr(transport, "_tempDataLen", 0)
    # Whole frames only: the partly written one, in dataBuffer, is left intact.
    transport._tempDataBuffer = []
    transport._tempDataLen = 0
    logger.warning(
        "ws_slow_consumer client=%s dropped_bytes=%d",
        getattr(protocol, "client_addr", None),
        dropped,
        extra={"event": "ws_slow_consumer", "dropped_bytes": dropped},
    )
    protocol.sendCloseFrame(code=SLOW_CONSUMER, isReply=False)


def wait_for_readers(server: type) -> None:
    """Replace Server.handle_reply: a websocket.send waits for the client to read."""
    original = server.handle_reply
    if is_patched(original):
        return

    async def handle_reply(self, protocol, message):
        if message.get("type") == "websocket.send":
            await drained(protocol)
        await original(self, protocol, message)

    handle_reply.emergence_patched = True
    server.handle_reply = handle_reply


async def drained(protocol: Any) -> None:
    """Wait (bounded) while more than WS_MAX_PENDING_BYTES is held for the socket."""
    transport = getattr(protocol, "transport", None)
    limit = settings.WS_MAX_PENDING_BYTES
    if transport is None or pending_bytes(transport) <= limit:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DRAIN_TIMEOUT_S
    while pending_bytes(transport) > limit and loop.time() < deadline:
        if getattr(protocol, "emergence_slow_consumer", False):
            return
        await asyncio.sleep(DRAIN_POLL_S)
