"""The one DB retry helper: every session load and message write goes through it."""

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import (
    DEFAULT_DB_ALIAS,
    InterfaceError,
    OperationalError,
    connection,
    connections,
)
from django.db.utils import load_backend

from ops import metrics

logger = logging.getLogger(__name__)

T = TypeVar("T")
RETRYABLE = (OperationalError, InterfaceError)


class DatabaseUnavailable(Exception):
    """The database stayed unreachable through every retry."""


def retry_delays(retries: int | None = None) -> list[float]:
    """Backoff before each retry: DB_RETRY_DELAY x 1, 2, 3 ... (0.5, 1.0, 1.5 s)."""
    # `retries` overrides DB_MAX_RETRIES (the retries after the first attempt).
    count = settings.DB_MAX_RETRIES if retries is None else retries
    return [settings.DB_RETRY_DELAY * (n + 1) for n in range(count)]


def drop_connection() -> None:
    """Throw away this thread's (broken) connection so the next use opens a new one."""
    try:
        connection.close()
    except RETRYABLE:
        # Closing a dead socket can fail; the wrapper is discarded either way.
        connection.connection = None


def _guarded(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run fn in the worker thread; on a connection error, drop the connection first."""
    if connection.in_atomic_block:
        # A retry inside a transaction would replay half of it: refuse loudly.
        raise RuntimeError("db_call must not run inside an open transaction")
    try:
        return fn(*args, **kwargs)
    except RETRYABLE:
        drop_connection()
        raise


# SQLite allows one writer: keep its work on the one shared thread. PostgreSQL work
# runs on threads of its own in parallel, each borrowing from the psycopg pool
# (database_sync_to_async returns the connection after every call). One thread per
# pooled connection: asyncio's default executor has cpu_count + 4 threads (6 here),
# which capped connects at ~65/s while the pool sat half idle (measured with py-spy).
DB_EXECUTOR = ThreadPoolExecutor(
    max_workers=settings.DB_THREADS, thread_name_prefix="emergence-db"
)
_run_shared_thread = database_sync_to_async(_guarded)
_run_parallel = database_sync_to_async(
    _guarded, thread_sensitive=False, executor=DB_EXECUTOR
)


def _runner():
    # The configured engine's vendor, not connection.vendor: that looks the
    # connection up in a context-local store, on the event loop, for every call.
    if _vendor(connections.settings[DEFAULT_DB_ALIAS]["ENGINE"]) == "postgresql":
        return _run_parallel
    return _run_shared_thread


@functools.cache
def _vendor(engine: str) -> str:
    return load_backend(engine).DatabaseWrapper.vendor


def _log_lost(op: str, attempt: int, delay: float, exc: Exception) -> None:
    metrics.DB_RETRY_OUTCOMES.labels(result="lost").inc()
    logger.warning(
        "db_connection_lost op=%s attempt=%d retry_in=%.1fs error=%s",
        op,
        attempt,
        delay,
        exc,
        extra={"event": "db_connection_lost", "op": op, "attempt": attempt},
    )


def _log_reconnected(op: str, attempt: int) -> None:
    metrics.DB_RETRY_OUTCOMES.labels(result="reconnected").inc()
    logger.info(
        "db_reconnected op=%s attempt=%d",
        op,
        attempt,
        extra={"event": "db_reconnected", "op": op, "attempt": attempt},
    )


def _log_unavailable(op: str, attempts: int, exc: Exception) -> None:
    metrics.DB_RETRY_OUTCOMES.labels(result="unavailable").inc()
    logger.error(
        "db_unavailable op=%s attempts=%d error=%s",
        op,
        attempts,
        exc,
        extra={"event": "db_unavailable", "op": op, "attempt": attempts},
    )


def _failed(op: str, attempt: int, delays: list[float], exc: Exception) -> float:
    """Log a failed attempt; the wait before the next, or DatabaseUnavailable."""
    if attempt == len(delays):
        _log_unavailable(op, attempt + 1, exc)
        raise DatabaseUnavailable(str(exc)) from exc
    _log_lost(op, attempt + 1, delays[attempt], exc)
    return delays[attempt]


async def db_call(
    fn: Callable[..., T], /, *args: Any, op: str = "", **kwargs: Any
) -> T:
    """Run sync ORM code off the event loop, retrying connection errors with backoff.

    Raises DatabaseUnavailable after the last attempt. Other exceptions pass through.
    """
    op = op or getattr(fn, "__name__", "db")
    delays = retry_delays()
    for attempt in range(len(delays) + 1):
        try:
            result = await _runner()(fn, *args, **kwargs)
        except RETRYABLE as exc:
            await asyncio.sleep(_failed(op, attempt, delays, exc))
            continue
        if attempt:
            _log_reconnected(op, attempt + 1)
        return result
    raise AssertionError("unreachable")  # pragma: no cover


def db_call_sync(
    fn: Callable[..., T],
    /,
    *args: Any,
    op: str = "",
    sleep: Callable[[float], None] = time.sleep,
    retries: int | None = None,
    **kwargs: Any,
) -> T:
    """The same policy for sync callers (commands, sync views); never on a loop."""
    # `retries` overrides DB_MAX_RETRIES for this call (`dbcheck --retries`).
    op = op or getattr(fn, "__name__", "db")
    delays = retry_delays(retries)
    for attempt in range(len(delays) + 1):
        try:
            result = _guarded(fn, *args, **kwargs)
        except RETRYABLE as exc:
            sleep(_failed(op, attempt, delays, exc))
            continue
        if attempt:
            _log_reconnected(op, attempt + 1)
        return result
    raise AssertionError("unreachable")  # pragma: no cover


def db_ping() -> float:
    """Make sure this thread's connection answers; return the round trip in ms.

    Callers run it through db_call, whose database_sync_to_async wrapper has already
    called close_old_connections (and which test helpers patch for good reason).
    """
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return (time.perf_counter() - started) * 1000
