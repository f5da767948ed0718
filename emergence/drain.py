"""Graceful shutdown: close the sockets with 1012 in batches over WS_DRAIN_SECONDS.

Run by Daphne's "before shutdown" trigger (compat/daphne.py), while the listening
port still answers: readiness turns 503 "draining" and new handshakes are refused
with HTTP 503 at once; then each socket's application is cancelled in its batch,
and the consumer closes it with 1012 and hands its cleanup to the shared detach
markers (chat/consumers.py, shutdown_close). Closing in batches spread over the
window turns the reconnects the other instances absorb into a stream, not a storm;
Phoenix's socket drainer does the same (batch_size, batch_interval, shutdown:
https://hexdocs.pm/phoenix/Phoenix.Endpoint.html#socket/3).

Process-local by nature: the connections are Daphne's own (Server.connections).
"""

import asyncio
import logging
import time
from typing import Any

from django.conf import settings

from ops import health

logger = logging.getLogger(__name__)

# Batches per drain: a tenth of the window each (fewer when there are fewer sockets).
DRAIN_BATCHES = 10
# After the last batch, how long the applications get to finish: the consumer's
# shutdown close (1 s) and cleanup (3 s) are bounded, so this is a safety net.
CLEANUP_GRACE_S = 5.0
# After the grace, how long the stragglers get once closed and cancelled again.
FORCE_WAIT_S = 1.0
# Then how long the clients get to answer their 1012 before the process exits: the
# exit drops every connection still open, and a client slow to read its 1012 can
# then see 1006 instead. Clients answer within milliseconds unless loaded; the close
# handshake itself may take 10 s (emergence/compat/daphne_frames.py), more than
# a drain should add to a shutdown.
HANDSHAKE_WAIT_S = 2.0
# RFC 6455 §7.4.1 via the IANA registry: "service restart", reconnect elsewhere.
SERVICE_RESTART = 1012

_refusing = False


def refusing() -> bool:
    """True once a drain has started: new WebSocket handshakes are refused."""
    return _refusing


def batch_schedule(
    count: int, seconds: float, batches: int = DRAIN_BATCHES
) -> list[tuple[float, int, int]]:
    """(delay, start, stop) per batch: `count` sockets spread evenly over `seconds`."""
    if count <= 0:
        return []
    batches = max(1, min(count, batches))
    return [
        (seconds * i / batches, i * count // batches, (i + 1) * count // batches)
        for i in range(batches)
    ]


def drain_window(close_timeout: float) -> float:
    """WS_DRAIN_SECONDS, cut so the drain and its cleanup fit in `close_timeout`."""
    window = max(0.0, float(settings.WS_DRAIN_SECONDS))
    fits = max(0.0, close_timeout - CLEANUP_GRACE_S)
    if window > fits:
        logger.warning(
            "drain_window_cut drain_s=%.1f application_close_timeout=%.1f",
            window,
            close_timeout,
            extra={"event": "drain_window_cut", "drain_seconds": fits},
        )
        return fits
    return window


def split_connections(
    connections: dict[Any, dict[str, Any]], websocket: type
) -> tuple[list[tuple[Any, Any]], list[Any]]:
    """(protocol, application) of every open socket; the other running apps."""
    # A socket whose client has left is finishing its own cleanup, and an HTTP
    # request is answered within the window: both are awaited, not cancelled.
    sockets, others = [], []
    for protocol, details in list(connections.items()):
        instance = details.get("application_instance")
        if isinstance(protocol, websocket) and "disconnected" not in details:
            sockets.append((protocol, instance))
        elif instance is not None and not instance.done():
            others.append(instance)
    return sockets, others


def close_socket(protocol: Any, instance: Any) -> None:
    """Cancel the socket's application (it closes 1012); close it if there is none."""
    if instance is not None and not instance.done():
        instance.cancel()
    elif getattr(protocol, "state", None) == getattr(protocol, "STATE_OPEN", object()):
        protocol.serverClose(code=SERVICE_RESTART)


def start(server: Any, websocket: type) -> "asyncio.Future[None]":
    """Refuse new sockets and turn readiness to draining now; drain in a task."""
    global _refusing
    _refusing = True
    health.start_draining()
    return asyncio.ensure_future(drain(server, websocket))


async def drain(server: Any, websocket: type) -> None:
    """Close the sockets of `server` in batches, wait (bounded) for their apps."""
    started = time.monotonic()
    window = drain_window(float(server.application_close_timeout))
    sockets, others = split_connections(server.connections, websocket)
    logger.info(
        "drain_started sockets=%d drain_s=%.1f",
        len(sockets),
        window,
        extra={"event": "drain_started", "sockets": len(sockets), "drain_s": window},
    )
    for delay, start, stop in batch_schedule(len(sockets), window):
        await asyncio.sleep(max(0.0, started + delay - time.monotonic()))
        for protocol, instance in sockets[start:stop]:
            close_socket(protocol, instance)
    instances = [i for _, i in sockets if i is not None] + others
    await wait_or_force(instances, sockets)
    unanswered = await wait_handshakes([protocol for protocol, _ in sockets])
    seconds = round(time.monotonic() - started, 3)
    logger.info(
        "drain_finished closed=%d unanswered=%d seconds=%.2f",
        len(sockets),
        unanswered,
        seconds,
        extra={
            "event": "drain_finished",
            "closed": len(sockets),
            "unanswered": unanswered,
            "seconds": seconds,
        },
    )


def still_open(protocol: Any) -> bool:
    """Whether the socket's TCP connection is still up (autobahn's state)."""
    closed = getattr(protocol, "STATE_CLOSED", None)
    return closed is not None and getattr(protocol, "state", closed) != closed


async def wait_handshakes(protocols: list[Any]) -> int:
    """Wait HANDSHAKE_WAIT_S at most for the clients to answer their close."""
    deadline = time.monotonic() + HANDSHAKE_WAIT_S
    while (left := sum(map(still_open, protocols))) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return left


async def wait_or_force(instances: list[Any], sockets: list[tuple[Any, Any]]) -> None:
    """Wait CLEANUP_GRACE_S for the apps; then close and cancel the rest, once."""
    if not instances:
        return
    _, pending = await asyncio.wait(instances, timeout=CLEANUP_GRACE_S)
    if not pending:
        return
    # An application that swallowed its cancellation: the process must still exit.
    logger.warning(
        "drain_forced pending=%d",
        len(pending),
        extra={"event": "drain_forced", "pending": len(pending)},
    )
    for protocol, instance in sockets:
        if instance in pending:
            close_socket(protocol, None)
    for instance in pending:
        instance.cancel()
    await asyncio.wait(pending, timeout=FORCE_WAIT_S)
