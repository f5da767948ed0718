"""Fixtures shared by the unit tests of every app (registered in tests/conftest.py)."""

import logging

import pytest


@pytest.fixture
def log_events(caplog):
    """Records of one structured event (the `event` extra), INFO and up captured."""
    caplog.set_level(logging.INFO)

    def events(name: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if getattr(r, "event", None) == name]

    return events


@pytest.fixture
def fast_password_hasher(settings):
    """PBKDF2's real cost is 0.3 s per user; these tests do not measure hashing."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def db_outage(monkeypatch, settings):
    """PostgreSQL stops answering, as the driver sees it; `.start()` / `.end()`.

    Every connection the app uses is borrowed from psycopg's pool, which checks it
    first (CONN_HEALTH_CHECKS -> ConnectionPool.check_connection, `conn.execute("")`).
    While the outage lasts, psycopg.Connection.execute raises psycopg.OperationalError
    ("server closed the connection unexpectedly"), so every check fails: the pool
    discards the connection, tries again and gives up with PoolTimeout, which Django
    wraps as django.db.OperationalError - the same path a dead server takes into the
    retry helper. The pool's timeout is cut to 0.1 s and the backoff to 10 ms so the
    four attempts take well under a second; everything else is the real stack.
    """
    import psycopg
    from django.db import connection

    settings.DB_RETRY_DELAY = 0.01
    state = {"down": False}
    real_execute = psycopg.Connection.execute

    def execute(self, query, *args, **kwargs):
        if state["down"]:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return real_execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", execute)
    monkeypatch.setattr(connection.pool, "timeout", 0.1)

    class Outage:
        def start(self) -> None:
            state["down"] = True

        def end(self) -> None:
            state["down"] = False

    yield Outage()
    state["down"] = False


@pytest.fixture
async def fresh_channel_layer():
    """A channel layer made in this test's event loop, and closed with it.

    channels caches one layer instance per process; channels_redis keeps asyncio
    locks and per-loop state in it. Each test has its own loop, so a layer reused
    from an earlier test can leave a consumer's receive() waiting on a lock of a
    dead loop (its disconnect then never finishes). Production has one loop; here
    every test gets a layer of its own.
    """
    from channels.layers import channel_layers, get_channel_layer

    channel_layers.backends = {}
    layer = get_channel_layer()
    yield layer
    # core layer: close_pools(); pubsub layer: flush() closes its connections.
    close = getattr(layer, "close_pools", None) or layer.flush
    await close()
    channel_layers.backends = {}
