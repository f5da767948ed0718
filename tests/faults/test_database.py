"""PostgreSQL faults under real Daphne processes: killed backends, an unreachable
database (a TCP proxy that is cut and restored), recovery without a restart.

Retry policy under test (settings): DB_MAX_RETRIES=3 retries after the first attempt,
with DB_RETRY_DELAY x 1, 2, 3 (0.5 s, 1 s, 1.5 s) between them; then db_unavailable.
"""

import asyncio
import time

import pytest

from tests.conftest import assert_no_errors
from tests.e2e.wsclient import (
    DEFAULT_TIMEOUT,
    append_figure,
    hello_of,
    sql,
    stored_seqs,
    wait_log,
)
from tests.proxy import TcpProxy
from tests.servers import APP_NAME_PREFIX
from tests.servers import test_database_url as database_url

pytestmark = pytest.mark.faults

UNAVAILABLE_FRAME = {"type": "error", "code": "db_unavailable"}


@pytest.fixture
def pg_proxy():
    """A cuttable TCP proxy in front of the test PostgreSQL."""
    from django.db import connection

    target = (
        connection.settings_dict.get("HOST") or "127.0.0.1",
        int(connection.settings_dict.get("PORT") or 5432),
    )
    proxy = TcpProxy(target).start()
    yield proxy
    proxy.close()


def daphne_via_proxy(daphne, proxy: TcpProxy, name: str = "a", **env: str):
    """A Daphne whose only way to the database is the proxy."""
    url = database_url(f"{APP_NAME_PREFIX}-{name}", port=proxy.port)
    return daphne(name, DATABASE_URL=url, **env)


async def terminate_app_backends() -> list[int]:
    """pg_terminate_backend every connection the Daphne processes hold; wait."""
    rows = await sql(
        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name LIKE %s AND datname = current_database()",
        f"{APP_NAME_PREFIX}%",
    )
    pids = [pid for pid, done in rows if done]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        alive = await sql(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", pids
        )
        if alive == [(0,)]:
            return pids
        await asyncio.sleep(0.05)
    raise AssertionError(f"backends {pids} still alive after pg_terminate_backend")


def levels(server, event: str) -> list[str]:
    return [r["level"] for r in server.events(event)]


def assert_only_db_unavailable_errors(server, expected: int) -> None:
    """The ERROR records are exactly `expected` db_unavailable ones; no traceback."""
    errors = [r for r in server.records() if r.get("level") in ("ERROR", "CRITICAL")]
    assert [r.get("event") for r in errors] == ["db_unavailable"] * expected, errors
    assert "Traceback" not in server.log_text(), server.log_text()[-4000:]


async def refused_for_db(client) -> None:
    """The socket got the db_unavailable error frame, then close 1013."""
    code = await client.wait_closed(timeout=30)
    assert code == 1013, (code, client.frames)
    assert len(client.frames) >= 1, client.frames
    last = client.frames[-1]
    assert {k: last.get(k) for k in UNAVAILABLE_FRAME} == UNAVAILABLE_FRAME, last
    assert "detail" in last
    assert not client.of_type("ack"), client.frames


async def connect_until_established(
    clients, server, session_id: str, token: str, timeout: float = 60.0, **kwargs
):
    """Reconnect (bounded) until a socket gets ws:session_established.

    Returns (client, attempts). A refused attempt must be the db_unavailable + 1013
    pair, never anything else.
    """
    deadline = time.monotonic() + timeout
    attempts = 0
    while True:
        attempts += 1
        client = await clients.open(
            server, session_id, token, established=False, **kwargs
        )
        await client.wait(lambda c=client: c.frames or c.closed, timeout=30)
        if client.frames and client.frames[0]["type"] == "ws:session_established":
            return client, attempts
        await refused_for_db(client)
        if time.monotonic() > deadline:
            raise AssertionError(f"no successful connect within {timeout}s")
        await asyncio.sleep(0.1)


# --- killed backends ---------------------------------------------------------------


async def test_terminated_backends_pooled(daphne, clients, alice, bob, token_for):
    """Default settings (psycopg pool with health checks): nobody notices."""
    server = daphne("a")
    first = await clients.open(server, "sess-first", token_for(alice))
    assert (await first.chat("before"))["seq"] == 1

    killed = await terminate_app_backends()
    assert killed, "the Daphne process held no database connection"

    second = await clients.open(server, "sess-second", token_for(bob))
    assert hello_of(second)["last_seq"] == 1
    assert (await second.chat("after"))["seq"] == 2
    assert (await first.chat("old socket"))["seq"] == 3
    await first.wait_seq(3)
    assert await stored_seqs("main") == [1, 2, 3]

    lost, back = server.events("db_connection_lost"), server.events("db_reconnected")
    print(
        f"\n[FAULT OBSERVATION] pooled mode, {len(killed)} backend(s) terminated: "
        f"db_connection_lost={len(lost)} db_reconnected={len(back)} "
        f"(attempts {[r.get('attempt') for r in back]})"
    )
    assert not [f for c in (first, second) for f in c.of_type("error")]
    # The pool's check discards the dead connections and, with its backoff capped
    # (emergence/compat/psycopg_pool.py), finds a live one within the checkout timeout.
    assert not lost, lost
    await first.close()
    await second.close()
    await wait_log(server, "ws_disconnect", count=2)
    assert not [r for r in server.events("ws_disconnect") if r["code"] == 1013]
    assert_no_errors(server)


async def test_terminated_backends_persistent_without_pool(
    daphne, clients, alice, bob, token_for
):
    """DB_POOL=false, CONN_MAX_AGE=60, no health checks: the first query after the
    termination fails and the retry helper reconnects."""
    server = daphne("a", DB_POOL="false", CONN_MAX_AGE="60", CONN_HEALTH_CHECKS="false")
    first = await clients.open(server, "sess-first", token_for(alice))
    assert (await first.chat("before"))["seq"] == 1
    assert not server.events("db_connection_lost")

    killed = await terminate_app_backends()
    assert killed, "the Daphne process held no persistent database connection"

    second = await clients.open(server, "sess-second", token_for(bob))
    assert (await second.chat("after"))["seq"] == 2
    assert (await first.chat("old socket"))["seq"] == 3
    await first.wait_seq(3)
    assert await stored_seqs("main") == [1, 2, 3]

    back = await wait_log(server, "db_reconnected")
    records = server.records()
    lost_at = next(
        i for i, r in enumerate(records) if r.get("event") == "db_connection_lost"
    )
    back_at = next(
        i for i, r in enumerate(records) if r.get("event") == "db_reconnected"
    )
    assert lost_at < back_at
    op = records[lost_at]["op"]
    assert back[0]["op"] == op
    assert back[0]["level"] == "INFO"
    # Each executor thread may hold its own dead connection, so a retry can land
    # on another one: the attempt number counts every failure before it.
    failures = [
        r
        for r in records[lost_at:back_at]
        if r.get("event") == "db_connection_lost" and r["op"] == op
    ]
    assert [r["level"] for r in failures] == ["WARNING"] * len(failures)
    assert [r["attempt"] for r in failures] == list(range(1, len(failures) + 1))
    assert back[0]["attempt"] == len(failures) + 1 >= 2, back
    assert f"attempt={back[0]['attempt']}" in back[0]["message"]
    print(
        f"\n[FAULT OBSERVATION] persistent mode: first failing op "
        f"{records[lost_at]['op']!r}, db_reconnected at attempt {back[0]['attempt']}"
    )
    assert not server.events("db_unavailable")
    await first.close()
    await second.close()
    await wait_log(server, "ws_disconnect", count=2)
    assert_no_errors(server)


# --- an unreachable database -------------------------------------------------------


async def test_db_unreachable_past_retry_window_then_recovers(
    daphne, clients, pg_proxy, alice, token_for
):
    server = daphne_via_proxy(daphne, pg_proxy)
    warm = await clients.open(server, "sess-warm", token_for(alice))
    await warm.close()
    await wait_log(server, "ws_disconnect")

    pg_proxy.cut()
    started = time.monotonic()
    refused = await clients.open(
        server, "sess-alice", token_for(alice), established=False
    )
    await refused_for_db(refused)
    assert len(refused.frames) == 1, refused.frames
    refused_after = time.monotonic() - started

    unavailable = await wait_log(server, "db_unavailable")
    assert [r["level"] for r in unavailable] == ["ERROR"]
    lost = server.events("db_connection_lost")
    assert len(lost) >= 3, lost
    assert set(levels(server, "db_connection_lost")) == {"WARNING"}
    assert [r["attempt"] for r in lost[:3]] == [1, 2, 3]
    closes = await wait_log(server, "ws_disconnect", code=1013)
    assert [(r["level"], r["reason"]) for r in closes] == [
        ("WARNING", "try_again_later")
    ]
    assert_only_db_unavailable_errors(server, 1)

    pg_proxy.restore()
    restored = time.monotonic()
    client, attempts = await connect_until_established(
        clients, server, "sess-alice", token_for(alice)
    )
    recovery = time.monotonic() - restored
    append_figure(
        f"DB recovery (psycopg pool, default retry settings): refused with 1013 "
        f"{refused_after:.2f} s after the cut; restore() -> first "
        f"ws:session_established in {recovery:.2f} s ({attempts} connect attempt(s))"
    )
    assert (await client.chat("back"))["seq"] == 1
    assert await stored_seqs("main") == [1]
    await client.close()
    await wait_log(server, "ws_disconnect", session_id="sess-alice", code=1000)
    # Only the attempts refused before the pool was back may have logged ERRORs.
    assert_only_db_unavailable_errors(server, attempts)


async def test_brief_db_cut_is_ridden_out(daphne, clients, pg_proxy, alice, token_for):
    server = daphne_via_proxy(daphne, pg_proxy)
    warm = await clients.open(server, "sess-warm", token_for(alice))
    await warm.close()
    await wait_log(server, "ws_disconnect")

    pg_proxy.cut()
    connecting = asyncio.create_task(
        clients.open(server, "sess-alice", token_for(alice))
    )
    try:
        # The connect is retrying: keep the database away a little longer.
        await wait_log(server, "db_connection_lost", timeout=5)
        await asyncio.sleep(0.5)
        assert not connecting.done(), "the connect ended during the cut"
    finally:
        pg_proxy.restore()
    client = await asyncio.wait_for(connecting, DEFAULT_TIMEOUT)
    assert hello_of(client)["user"] == "alice"
    assert (await client.chat("after the blip"))["seq"] == 1

    back = await wait_log(server, "db_reconnected")
    assert back[0]["level"] == "INFO" and back[0]["attempt"] >= 2, back
    assert not server.events("db_unavailable")
    await client.close()
    await wait_log(server, "ws_disconnect", session_id="sess-alice")
    assert_no_errors(server)


async def test_message_during_outage_is_stored_once_after_resend(
    daphne, clients, pg_proxy, alice, bob, token_for
):
    server = daphne_via_proxy(daphne, pg_proxy)
    a = await clients.open(server, "sess-alice", token_for(alice))
    b = await clients.open(server, "sess-bob", token_for(bob))

    pg_proxy.cut()
    await a.say("sent-in-outage", "will it stay?")
    await refused_for_db(a)
    assert (await wait_log(server, "db_unavailable"))[0]["op"] == "message_create"
    closes = await wait_log(server, "ws_disconnect", session_id="sess-alice")
    assert [(r["code"], r["level"]) for r in closes] == [(1013, "WARNING")]

    pg_proxy.restore()
    a2, attempts = await connect_until_established(
        clients, server, "sess-alice", token_for(alice), last_seq=0
    )
    assert hello_of(a2)["resumed"] is True
    first = await a2.chat("sent-in-outage", "will it stay?")
    assert first["duplicate"] is False and first["seq"] == 1, first
    a2.frames.clear()
    again = await a2.chat("sent-in-outage", "will it stay?")
    assert again == {
        "type": "ack",
        "id": "sent-in-outage",
        "seq": 1,
        "duplicate": True,
    }
    rows = await sql(
        "SELECT count(*) FROM chat_message WHERE client_id = %s", "sent-in-outage"
    )
    assert rows == [(1,)]
    assert await stored_seqs("main") == [1]

    # bob's idle socket survived the outage and sees the message exactly once.
    assert (await a2.chat("then-this"))["seq"] == 2
    await b.wait_seq(2)
    assert b.seqs() == [1, 2]
    await a2.close()
    await b.close()
    await wait_log(server, "ws_disconnect", session_id="sess-bob")
    # The write's db_unavailable, and one per reconnect refused before the pool was
    # back (usually none).
    assert_only_db_unavailable_errors(server, attempts)
