"""ops.db: the retry policy of db_call / db_call_sync, and db_ping."""

import asyncio
import logging
import time

import psycopg
import pytest
from django.conf import settings as django_settings
from django.db import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    connection,
    connections,
    transaction,
)

from chat.models import Thread
from ops import db
from ops.db import DatabaseUnavailable, db_call, db_call_sync, db_ping


class Flaky:
    """Fails `failures` times with `exc`, then returns what it was called with."""

    def __init__(self, failures: int, exc: type[Exception] = OperationalError):
        self.failures = failures
        self.exc = exc
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc(f"connection lost #{self.calls}")
        return ("ok", args, kwargs)


@pytest.fixture
def sleeps():
    """A recording `sleep` for db_call_sync: no real waiting."""
    recorded: list[float] = []
    return recorded


@pytest.fixture
def async_sleeps(monkeypatch):
    """Record db_call's backoff sleeps, and skip the waiting."""
    recorded: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay, *args, **kwargs):
        recorded.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(db.asyncio, "sleep", fake_sleep)
    return recorded


def test_default_policy_is_three_retries_at_half_second_steps():
    assert django_settings.DB_MAX_RETRIES == 3
    assert django_settings.DB_RETRY_DELAY == 0.5
    assert db.retry_delays() == [0.5, 1.0, 1.5]


def test_delays_follow_the_settings(settings):
    settings.DB_RETRY_DELAY = 0.01
    settings.DB_MAX_RETRIES = 5
    assert db.retry_delays() == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05])
    settings.DB_MAX_RETRIES = 0
    assert db.retry_delays() == []


# --- db_call_sync -------------------------------------------------------------------


def test_sync_success_first_time_logs_nothing(log_events, sleeps):
    fn = Flaky(0)
    assert db_call_sync(fn, 1, sleep=sleeps.append, x=2) == ("ok", (1,), {"x": 2})
    assert fn.calls == 1
    assert sleeps == []
    assert not log_events("db_connection_lost")
    assert not log_events("db_reconnected")


@pytest.mark.parametrize("failures", [1, 2, 3])
def test_sync_recovers_after_failures(log_events, sleeps, failures):
    fn = Flaky(failures)
    result = db_call_sync(fn, "a", op="my_op", sleep=sleeps.append, key="v")
    assert result == ("ok", ("a",), {"key": "v"})
    assert fn.calls == failures + 1
    assert sleeps == [0.5, 1.0, 1.5][:failures]
    lost = log_events("db_connection_lost")
    assert [r.levelno for r in lost] == [logging.WARNING] * failures
    assert [r.attempt for r in lost] == list(range(1, failures + 1))
    assert {r.op for r in lost} == {"my_op"}
    (reconnected,) = log_events("db_reconnected")
    assert reconnected.levelno == logging.INFO
    assert reconnected.attempt == failures + 1
    assert f"attempt={failures + 1}" in reconnected.getMessage()
    assert not log_events("db_unavailable")


def test_sync_gives_up_after_max_retries(log_events, sleeps):
    fn = Flaky(100)
    with pytest.raises(DatabaseUnavailable) as info:
        db_call_sync(fn, op="doomed", sleep=sleeps.append)
    assert fn.calls == 4  # DB_MAX_RETRIES + 1
    assert sleeps == [0.5, 1.0, 1.5]
    assert isinstance(info.value.__cause__, OperationalError)
    assert "connection lost #4" in str(info.value)
    assert [r.attempt for r in log_events("db_connection_lost")] == [1, 2, 3]
    (gave_up,) = log_events("db_unavailable")
    assert gave_up.levelno == logging.ERROR
    assert gave_up.attempt == 4
    assert gave_up.op == "doomed"
    assert not log_events("db_reconnected")


def test_sync_attempts_follow_db_max_retries(settings, sleeps):
    settings.DB_MAX_RETRIES = 1
    settings.DB_RETRY_DELAY = 0.2
    fn = Flaky(100)
    with pytest.raises(DatabaseUnavailable):
        db_call_sync(fn, sleep=sleeps.append)
    assert fn.calls == 2
    assert sleeps == [0.2]


def test_sync_interface_error_is_retried(sleeps):
    fn = Flaky(1, InterfaceError)
    assert db_call_sync(fn, sleep=sleeps.append)[0] == "ok"
    assert fn.calls == 2


@pytest.mark.parametrize("exc", [IntegrityError, ProgrammingError, ValueError])
def test_sync_other_errors_are_not_retried(log_events, sleeps, exc):
    fn = Flaky(1, exc)
    with pytest.raises(exc):
        db_call_sync(fn, sleep=sleeps.append)
    assert fn.calls == 1
    assert sleeps == []
    assert not log_events("db_connection_lost")
    assert not log_events("db_unavailable")


def test_sync_op_defaults_to_the_function_name(log_events, sleeps):
    def load_things():
        if not sleeps:
            raise OperationalError("gone")
        return 1

    db_call_sync(load_things, sleep=sleeps.append)
    assert log_events("db_connection_lost")[0].op == "load_things"
    assert log_events("db_reconnected")[0].op == "load_things"


def test_sync_real_sleep_uses_the_configured_delay(settings):
    settings.DB_RETRY_DELAY = 0.02
    fn = Flaky(3)
    started = time.monotonic()
    db_call_sync(fn)
    # 0.02 + 0.04 + 0.06
    assert time.monotonic() - started >= 0.12


@pytest.mark.django_db
def test_sync_refuses_to_run_inside_a_transaction(sleeps):
    fn = Flaky(0)
    with transaction.atomic(), pytest.raises(RuntimeError, match="transaction"):
        db_call_sync(fn, sleep=sleeps.append)
    assert fn.calls == 0


@pytest.mark.django_db(transaction=True)
def test_connection_error_drops_the_connection(sleeps):
    connection.ensure_connection()
    first = connection.connection
    seen = []

    def query():
        seen.append(connection.connection)
        if len(seen) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return Thread.objects.count()

    assert db_call_sync(query, sleep=sleeps.append) == 0
    assert seen[0] is first
    assert seen[1] is None  # the broken wrapper was thrown away before the retry


@pytest.mark.django_db(transaction=True)
def test_sync_survives_a_really_terminated_backend(log_events, sleeps):
    """A real driver-level failure: PostgreSQL kills our backend mid-session."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])

    def backend_pid():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return cursor.fetchone()[0]

    new_pid = db_call_sync(backend_pid, sleep=sleeps.append)
    assert new_pid != pid
    assert sleeps == [0.5]
    (lost,) = log_events("db_connection_lost")
    assert lost.levelno == logging.WARNING
    assert log_events("db_reconnected")[0].attempt == 2


# --- db_call (async) ----------------------------------------------------------------


async def test_async_success(async_sleeps, log_events):
    fn = Flaky(0)
    assert await db_call(fn, 1, y=2) == ("ok", (1,), {"y": 2})
    assert async_sleeps == []
    assert not log_events("db_connection_lost")


@pytest.mark.parametrize("failures", [1, 3])
async def test_async_recovers_after_failures(async_sleeps, log_events, failures):
    fn = Flaky(failures)
    assert (await db_call(fn, op="op1"))[0] == "ok"
    assert fn.calls == failures + 1
    assert async_sleeps == [0.5, 1.0, 1.5][:failures]
    lost = log_events("db_connection_lost")
    assert [(r.levelno, r.attempt) for r in lost] == [
        (logging.WARNING, n) for n in range(1, failures + 1)
    ]
    (reconnected,) = log_events("db_reconnected")
    assert (reconnected.levelno, reconnected.attempt) == (logging.INFO, failures + 1)


async def test_async_gives_up(async_sleeps, log_events):
    fn = Flaky(100, InterfaceError)
    with pytest.raises(DatabaseUnavailable):
        await db_call(fn, op="op2")
    assert fn.calls == 4
    assert async_sleeps == [0.5, 1.0, 1.5]
    (gave_up,) = log_events("db_unavailable")
    assert (gave_up.levelno, gave_up.attempt, gave_up.op) == (logging.ERROR, 4, "op2")


async def test_async_real_backoff_with_small_delay(settings, log_events):
    settings.DB_RETRY_DELAY = 0.02
    fn = Flaky(100)
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable):
        await db_call(fn)
    elapsed = time.monotonic() - started
    assert fn.calls == 4
    assert 0.12 <= elapsed < 2.0  # 0.02 + 0.04 + 0.06, not the 3 s default
    assert len(log_events("db_connection_lost")) == 3


async def test_async_other_errors_pass_through(async_sleeps):
    fn = Flaky(1, KeyError)
    with pytest.raises(KeyError):
        await db_call(fn)
    assert fn.calls == 1
    assert async_sleeps == []


async def test_async_runs_off_the_event_loop():
    import threading

    loop_thread = threading.get_ident()
    worker = await db_call(threading.get_ident)
    assert worker != loop_thread


@pytest.mark.django_db(transaction=True)
async def test_db_ping_measures_a_round_trip():
    elapsed_ms = await db_call(db_ping)
    assert isinstance(elapsed_ms, float)
    assert 0 < elapsed_ms < 2000


def test_postgresql_work_runs_in_parallel_and_sqlites_on_one_thread(monkeypatch):
    assert db._runner() is db._run_parallel  # the suite's PostgreSQL
    sqlite = {**connections.settings["default"], "ENGINE": "django.db.backends.sqlite3"}
    monkeypatch.setitem(connections.settings, "default", sqlite)
    assert db._runner() is db._run_shared_thread
