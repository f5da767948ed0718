"""PostgreSQL advisory locks, for one-off work several processes may start at once."""

import contextlib
import logging
import time
import zlib
from collections.abc import Iterator
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections

logger = logging.getLogger(__name__)


class LockTimeout(Exception):
    """Another process held the lock for longer than the caller would wait."""


def lock_key(name: str) -> int:
    """The number PostgreSQL knows the lock `name` by (stable across processes)."""
    return zlib.crc32(name.encode())


@contextlib.contextmanager
def advisory_lock(
    name: str, *, timeout: float, using: str = DEFAULT_DB_ALIAS
) -> Iterator[float]:
    """Hold the session advisory lock `name` while the block runs; yields the wait.

    The lock lives on a connection of its own: nothing the block does with Django's
    connections (pooled, closed, reopened) can release it early, and PostgreSQL
    releases it if this process dies. Other databases take no lock: SQLite is the
    single-process mode and serialises its writers itself.
    """
    connection = connections[using]
    if connection.vendor != "postgresql":
        yield 0.0
        return
    key = lock_key(name)
    # Driver errors come out as Django's (OperationalError ...), like the ORM's.
    with connection.wrap_database_errors:
        conn = connection.Database.connect(
            **connection.get_connection_params(), autocommit=True
        )
    try:
        started = time.monotonic()
        with connection.wrap_database_errors:
            taken = conn.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()
            if not taken[0]:
                logger.info(
                    "lock_wait name=%s: another process holds it; waiting up to %.0f s",
                    name,
                    timeout,
                    extra={"event": "lock_wait", "lock": name},
                )
                _wait_for(conn, key, name, timeout)
        yield time.monotonic() - started
    finally:
        # Closing the session releases its advisory locks.
        conn.close()


def _wait_for(conn: Any, key: int, name: str, timeout: float) -> None:
    """Block until the lock is ours, at most `timeout` seconds (LockTimeout)."""
    from psycopg import errors

    milliseconds = max(1, int(timeout * 1000))
    conn.execute("SELECT set_config('lock_timeout', %s, false)", [f"{milliseconds}"])
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", [key])
    except errors.LockNotAvailable as exc:
        raise LockTimeout(
            f"{name}: still held by another process after {timeout:.0f} s"
        ) from exc
