"""Several Daphne instances behave as one server: presence, grace, metrics, shutdown."""

import asyncio
import json
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import assert_no_errors
from tests.e2e.wsclient import (
    append_figure,
    assert_in_order_once,
    hello_of,
    sql,
    wait_log,
)
from tests.servers import ROOT

pytestmark = pytest.mark.e2e

GRACE = "1.5"


def presence_frames(client) -> list[dict]:
    return client.of_type("presence")


def leaves_of(client, user: str) -> list[dict]:
    return [f for f in presence_frames(client) if user in f["leaves"]]


def joins_of(client, user: str) -> list[dict]:
    return [f for f in presence_frames(client) if user in f["joins"]]


async def session_status(session_id: str) -> str:
    rows = await sql(
        "SELECT status FROM sessions_app_chatsession WHERE id = %s", session_id
    )
    return rows[0][0]


@pytest.fixture
def pair(daphne):
    """Two instances sharing PostgreSQL and Redis, with a short grace period."""
    # One account stands for many users in these tests: per-user limits lifted.
    env = {
        "WS_CLEANUP_GRACE_SECONDS": GRACE,
        "WS_RATE_LIMIT": "1000",
        "WS_USER_RATE_LIMIT": "1000",
        "WS_MAX_SOCKETS_PER_USER": "1000",
    }
    return daphne("a", **env), daphne("b", **env)


async def test_message_on_a_reaches_b_in_order(pair, clients, alice, bob, token_for):
    a, b = pair
    sender = await clients.open(a, "s-alice", token_for(alice))
    receiver = await clients.open(b, "s-bob", token_for(bob))
    for i in range(20):
        await sender.say(f"m{i}")
    await receiver.wait_seq(20)
    assert_in_order_once(receiver.seqs(), 1, 20)
    assert {f["user"] for f in receiver.of_type("chat.message")} == {"alice"}


async def test_presence_snapshot_and_join(pair, clients, alice, bob, token_for):
    a, b = pair
    first = await clients.open(a, "s-alice", token_for(alice))
    snapshot = await first.wait_frame("presence")
    assert snapshot["joins"] == ["alice"] and snapshot["leaves"] == []
    second = await clients.open(b, "s-bob", token_for(bob))
    assert (await second.wait_frame("presence"))["joins"] == ["alice", "bob"]
    await first.wait(lambda: joins_of(first, "bob"))
    # the joining socket gets the full list, not its own join again
    await asyncio.sleep(0.3)
    assert len(presence_frames(second)) == 1


async def test_reconnect_on_other_instance_within_grace_cancels(
    pair, clients, alice, bob, token_for
):
    a, b = pair
    observer = await clients.open(b, "s-bob", token_for(bob))
    dropped = await clients.open(a, "s-alice", token_for(alice))
    await observer.wait(lambda: joins_of(observer, "alice"))
    dropped.abort()
    await wait_log(a, "user_detach_delay_start", session_id="s-alice")
    back = await clients.open(b, "s-alice", token_for(alice))
    assert hello_of(back)["resumed"] is True
    await wait_log(a, "user_detach_cancelled", timeout=10, session_id="s-alice")
    assert not a.events("user_detach_executing")
    await asyncio.sleep(0.5)
    assert leaves_of(observer, "alice") == []
    assert len(joins_of(observer, "alice")) == 1  # never left: no new join
    assert await session_status("s-alice") == "active"
    assert_no_errors(a)
    assert_no_errors(b)


async def test_drop_and_stay_away_leaves_once_after_grace(
    pair, clients, alice, bob, token_for
):
    a, b = pair
    observer = await clients.open(b, "s-bob", token_for(bob))
    dropped = await clients.open(a, "s-alice", token_for(alice))
    await observer.wait(lambda: joins_of(observer, "alice"))
    dropped.abort()
    dropped_at = time.monotonic()
    await observer.wait(lambda: leaves_of(observer, "alice"), timeout=15)
    waited = time.monotonic() - dropped_at
    await wait_log(a, "user_detach_executing", session_id="s-alice")
    await asyncio.sleep(1.0)
    assert len(leaves_of(observer, "alice")) == 1
    assert await session_status("s-alice") == "idle"
    grace = float(GRACE)
    assert grace <= waited < grace + 3, waited
    append_figure(
        f"grace accuracy: leave seen {waited:.3f}s after the drop "
        f"(grace {grace}s, +{(waited - grace) * 1000:.0f} ms)"
    )
    assert_no_errors(a)


async def test_two_tabs_one_leave(pair, clients, alice, bob, token_for):
    a, b = pair
    observer = await clients.open(b, "s-bob", token_for(bob))
    tab1 = await clients.open(a, "tab-1", token_for(alice))
    tab2 = await clients.open(b, "tab-2", token_for(alice))
    await observer.wait(lambda: joins_of(observer, "alice"))
    await tab1.close()
    await wait_log(a, "user_detach_executing", timeout=10, session_id="tab-1")
    await asyncio.sleep(0.5)
    assert leaves_of(observer, "alice") == []
    await tab2.close()
    await observer.wait(lambda: leaves_of(observer, "alice"), timeout=10)
    await asyncio.sleep(float(GRACE) + 0.5)
    assert len(leaves_of(observer, "alice")) == 1
    assert len(joins_of(observer, "alice")) == 1


def _get_json(url: str, token: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.fixture
def staff(make_user):
    return make_user("ops", is_staff=True)


async def test_ws_metrics_equal_on_every_instance(
    pair, clients, alice, bob, staff, token_for
):
    a, b = pair
    for server, session_id, how in [
        (a, "m1", 1000),
        (b, "m2", 1001),
        (a, "m3", "abort"),
        (b, "m4", "abort"),
        (a, "m5", 1000),
    ]:
        client = await clients.open(server, session_id, token_for(alice))
        if how == "abort":
            client.abort()
        else:
            await client.close(how)
    bob_socket = await clients.open(b, "m6", token_for(bob))
    bob_socket.abort()
    await wait_log(b, "ws_disconnect", session_id="m6")
    await wait_log(a, "ws_disconnect", count=3)
    status_a, from_a = _get_json(f"{a.http}/ws-metrics", token_for(staff))
    status_b, from_b = _get_json(f"{b.http}/ws-metrics", token_for(staff))
    assert status_a == status_b == 200
    assert from_a == from_b
    figures = from_a["metrics"]
    assert figures["all_reasons"]["alice"] == {
        "normal_closure": 2,
        "going_away": 1,
        "abnormal_closure": 2,
    }
    assert figures["all_reasons"]["bob"] == {"abnormal_closure": 1}
    assert figures["top_disconnects"][0] == ["alice", 5]
    assert figures["total_users_tracked"] == 2
    assert set(figures["last_disconnect"]) == {"alice", "bob"}
    assert _get_json(f"{a.http}/ws-metrics", token_for(alice))[0] == 403


async def test_sigterm_moves_sockets_with_1012_and_loses_nothing(
    pair, clients, alice, bob, token_for
):
    a, b = pair
    sockets = [
        await clients.open(a, f"t-{i}", token_for(alice), name=f"t-{i}")
        for i in range(50)
    ]
    sender = await clients.open(b, "sender", token_for(bob))
    total = 120

    async def send_all() -> None:
        for i in range(total):
            await sender.say(f"n{i}")
            await asyncio.sleep(0.01)

    sending = asyncio.create_task(send_all())
    await sockets[0].wait_seq(20)
    a.proc.send_signal(signal.SIGTERM)
    codes = [await s.wait_closed(timeout=15) for s in sockets]
    assert codes == [1012] * 50, codes
    moved = []
    for s in sockets:
        last = max(s.seqs(), default=0)
        moved.append(
            await clients.open(
                b, s.name, token_for(alice), last_seq=last, name=f"{s.name}-b"
            )
        )
    await sending
    for before, after in zip(sockets, moved, strict=True):
        assert hello_of(after)["resumed"] is True
        # The drain spreads the 1012s: a socket closed late may already have had
        # every message before it moved.
        if max(before.seqs(), default=0) < total:
            await after.wait_seq(total, timeout=15)
        assert_in_order_once(before.seqs() + after.seqs(), 1, total)
    assert a.stop() is not None
    records = a.events("ws_disconnect")
    assert len(records) == 50 and {r["code"] for r in records} == {1012}
    assert {r["level"] for r in records} == {"INFO"}
    assert_no_errors(a)
    assert_no_errors(b)


async def test_killed_instance_is_reaped(daphne, clients, alice, bob, token_for):
    env = {
        "WS_CLEANUP_GRACE_SECONDS": GRACE,
        "PRESENCE_TTL_SECONDS": "2",
        "PRESENCE_REFRESH_SECONDS": "0.5",
        "REAPER_INTERVAL_SECONDS": "0",  # the command does it here (sweep: below)
    }
    a = daphne("a", **env)
    b = daphne("b", **env)
    observer = await clients.open(b, "s-bob", token_for(bob))
    victims = [await clients.open(a, f"v-{i}", token_for(alice)) for i in range(3)]
    await observer.wait(lambda: joins_of(observer, "alice"))
    victims[0].abort()  # a cleanup pending on A when it dies
    await wait_log(a, "user_detach_delay_start", session_id="v-0")
    a.kill()
    await asyncio.sleep(float(GRACE) + 5 + 0.5)  # grace + marker slack; TTL 2 s
    rows = await sql(
        "SELECT id, status FROM sessions_app_chatsession WHERE id LIKE 'v-%%' "
        "ORDER BY id"
    )
    assert [status for _, status in rows] == ["active"] * 3
    assert leaves_of(observer, "alice") == []
    out = subprocess.run(
        [sys.executable, "manage.py", "reap_sessions"],
        cwd=ROOT,
        env=b.environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "marked 3 session(s) idle" in out.stdout, out.stdout
    assert "broadcast 1 presence leave(s)" in out.stdout, out.stdout
    rows = await sql("SELECT status FROM sessions_app_chatsession WHERE id LIKE 'v-%%'")
    assert [status for (status,) in rows] == ["idle"] * 3
    await observer.wait(lambda: leaves_of(observer, "alice"), timeout=10)


async def test_liveness_stays_fast_while_300_sockets_abort(
    daphne, clients, alice, token_for
):
    # One account stands for 300 users here: lift the per-user socket limit.
    server = daphne("a", WS_CLEANUP_GRACE_SECONDS="30", WS_MAX_SOCKETS_PER_USER="1000")
    sockets = [
        await clients.open(server, f"storm-{i}", token_for(alice)) for i in range(300)
    ]
    latencies: list[float] = []

    def probe() -> None:
        for _ in range(200):
            started = time.perf_counter()
            with urllib.request.urlopen(f"{server.http}/health/liveness", timeout=5):
                latencies.append((time.perf_counter() - started) * 1000)

    probing = asyncio.get_running_loop().run_in_executor(None, probe)
    await asyncio.sleep(0.05)
    for s in sockets:
        s.abort()
    await probing
    await wait_log(server, "ws_disconnect", count=300, timeout=30)
    await wait_log(server, "user_detach_delay_start", count=300, timeout=30)
    p50 = statistics.median(latencies)
    p99 = statistics.quantiles(latencies, n=100)[98]
    append_figure(
        f"liveness during a 300-socket abort storm: p50 {p50:.1f} ms, "
        f"p99 {p99:.1f} ms, max {max(latencies):.1f} ms ({len(latencies)} probes)"
    )
    assert_no_errors(server)


async def test_periodic_sweep_finishes_a_killed_instances_cleanups(
    daphne, clients, alice, bob, token_for
):
    env = {
        "WS_CLEANUP_GRACE_SECONDS": GRACE,
        "PRESENCE_TTL_SECONDS": "2",
        "PRESENCE_REFRESH_SECONDS": "0.5",
        "REAPER_INTERVAL_SECONDS": "1",
    }
    a = daphne("a", **env)
    b = daphne("b", **env)
    observer = await clients.open(b, "s-bob", token_for(bob))
    await clients.open(a, "v-0", token_for(alice))
    await observer.wait(lambda: joins_of(observer, "alice"))
    a.kill()
    killed_at = time.monotonic()
    await observer.wait(lambda: leaves_of(observer, "alice"), timeout=20)
    await wait_log(b, "sessions_reaped", timeout=10)
    rows = await sql("SELECT status FROM sessions_app_chatsession WHERE id = 'v-0'")
    assert rows == [("idle",)]
    append_figure(
        f"kill -9: leave broadcast by another instance's sweep "
        f"{time.monotonic() - killed_at:.1f}s after the kill (presence TTL 2 s)"
    )
    assert_no_errors(b)
