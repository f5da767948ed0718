"""migrate_locked: two deploys migrating one empty database at once both succeed."""

import io
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from ops.locks import advisory_lock, lock_key
from ops.management.commands.migrate_locked import LOCK_NAME
from tests.commands import manage
from tests.servers import test_database_url as database_url

pytestmark = pytest.mark.usefixtures("transactional_db")


def server_connection(dbname: str = "postgres") -> psycopg.Connection:
    """An autocommit connection to the test run's PostgreSQL server."""
    db = connection.settings_dict
    return psycopg.connect(
        dbname=dbname,
        host=db.get("HOST") or "127.0.0.1",
        port=db.get("PORT") or 5432,
        user=db.get("USER") or "postgres",
        password=db.get("PASSWORD") or None,
        autocommit=True,
    )


@pytest.fixture
def empty_database():
    """A database of its own, created empty for the test and dropped after it."""
    name = f"emergence_migrate_{secrets.token_hex(4)}"
    with server_connection() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with server_connection() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def url_of(name: str) -> str:
    """The test database URL, pointed at another database of the same server."""
    base, _, query = database_url("emergence-migrate").partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}?{query}"


def waiting_for_the_lock(conn: psycopg.Connection) -> int:
    """How many sessions wait for our advisory lock on this database."""
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND objid = %s AND database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database())",
        [lock_key(LOCK_NAME)],
    ).fetchone()
    return row[0]


def test_two_instances_migrating_at_once_both_succeed(empty_database):
    url = url_of(empty_database)
    with server_connection(empty_database) as holder:
        # Both deploys reach the lock while it is held, so they contend for it at
        # the same moment once it is released: one migrates, the other waits.
        holder.execute("SELECT pg_advisory_lock(%s)", [lock_key(LOCK_NAME)])
        with ThreadPoolExecutor(2) as pool:
            runs = [
                pool.submit(
                    manage, "migrate_locked", "--noinput", DATABASE_URL=url, timeout=180
                )
                for _ in range(2)
            ]
            deadline = time.monotonic() + 60
            while waiting_for_the_lock(holder) < 2:
                assert time.monotonic() < deadline, [r.done() for r in runs]
                time.sleep(0.1)
            holder.execute("SELECT pg_advisory_unlock(%s)", [lock_key(LOCK_NAME)])
            done = [run.result() for run in runs]
    for run in done:
        assert run.returncode == 0, run.stdout + run.stderr
        assert "lock_wait name=emergence.migrate" in run.stderr
        assert "Error" not in run.stderr
    applied = [run for run in done if "Applying chat.0001_initial... OK" in run.stdout]
    assert len(applied) == 1, [run.stdout[:3000] for run in done]
    check = manage("migrate", "--check", DATABASE_URL=url)
    assert check.returncode == 0, check.stdout + check.stderr
    with server_connection(empty_database) as conn:
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables")}
    assert {"chat_message", "sessions_app_connectionevent", "auth_user"} <= tables


def test_a_lock_held_too_long_fails_the_command():
    held = advisory_lock(LOCK_NAME, timeout=5)
    with held, pytest.raises(CommandError, match="migrate lock not taken"):
        call_command("migrate_locked", "--wait", "0.3", "--plan", stdout=io.StringIO())


def test_plan_is_a_dry_run_under_the_lock():
    out = io.StringIO()
    call_command("migrate_locked", "--plan", stdout=out, stderr=io.StringIO())
    assert "No planned migration operations." in out.getvalue()


def test_the_lock_is_released_after_the_block():
    with advisory_lock("emergence.test", timeout=1) as waited:
        assert waited < 1
    with advisory_lock("emergence.test", timeout=1) as waited:
        assert waited < 1


def test_the_wait_must_be_positive():
    with pytest.raises(CommandError, match="--wait must be more than 0"):
        call_command("migrate_locked", "--wait", "0", stdout=io.StringIO())
