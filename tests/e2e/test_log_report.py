"""log_report on the log of a real Daphne run: mixed disconnects (1000, 1001, an
abort seen as 1006), a reconnect within the grace period, a terminated database
backend, then the database cut past the retry window (1013, db_unavailable)."""

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from tests.commands import manage
from tests.e2e.wsclient import wait_log
from tests.faults.test_database import (  # noqa: F401 - pg_proxy: a fixture
    daphne_via_proxy,
    pg_proxy,
    refused_for_db,
    terminate_app_backends,
)

pytestmark = pytest.mark.e2e

GRACE_S = 1.5


async def test_log_report_counts_a_real_run(
    daphne,
    clients,
    pg_proxy,  # noqa: F811 - the fixture imported above
    alice,
    bob,
    carol,
    token_for,
    tmp_path,
):
    # Persistent connections without the pool's checks: a terminated backend is
    # met by a query, so the retry helper logs db_connection_lost/db_reconnected.
    # One DB thread: with several, the next query may run on a thread that never
    # opened a connection, and meet no terminated backend at all.
    server = daphne_via_proxy(
        daphne,
        pg_proxy,
        DB_THREADS="1",
        DB_POOL="false",
        CONN_MAX_AGE="60",
        CONN_HEALTH_CHECKS="false",
        DB_RETRY_DELAY="0.2",
        WS_CLEANUP_GRACE_SECONDS=str(GRACE_S),
    )
    alice_ws = await clients.open(server, "sess-alice", token_for(alice))
    assert (await alice_ws.chat("hello"))["seq"] == 1
    bob_ws = await clients.open(server, "sess-bob", token_for(bob))
    carol_ws = await clients.open(server, "sess-carol", token_for(carol))

    # 1000, then back within the grace period: the detach is cancelled.
    await alice_ws.close(1000)
    await wait_log(server, "ws_disconnect", session_id="sess-alice")
    alice_ws = await clients.open(server, "sess-alice", token_for(alice))
    # 1001 and a dropped connection (1006): both detaches execute.
    await bob_ws.close(1001)
    carol_ws.abort()
    await wait_log(server, "ws_disconnect", count=3)
    await wait_log(server, "user_detach_cancelled", timeout=GRACE_S + 10)
    await wait_log(server, "user_detach_executing", count=2, timeout=GRACE_S + 10)

    # A terminated backend: retried and reconnected, nobody notices.
    assert await terminate_app_backends()
    assert (await alice_ws.chat("after-terminate"))["seq"] == 2
    await wait_log(server, "db_reconnected")

    # The database unreachable past the retry window: a connect is refused (1013).
    pg_proxy.cut()
    try:
        refused = await clients.open(
            server, "sess-bob-2", token_for(bob), established=False
        )
        await refused_for_db(refused)
        await wait_log(server, "db_unavailable")
    finally:
        pg_proxy.restore()
    await alice_ws.close(1000)
    await wait_log(server, "ws_disconnect", session_id="sess-alice", count=2)
    await asyncio.sleep(GRACE_S + 0.5)  # let alice's last detach be logged
    server.stop()

    text = server.log_text()
    records = server.records()
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(records) == len(lines), "a line of the JSON log is not a JSON object"
    for record in records:
        assert {"timestamp", "level", "logger", "message", "event", "instance"} <= set(
            record
        ), record
        assert record["instance"] == "a"
    assert any(r["event"] == "http_access" for r in records), "access log missing"
    assert any(r["event"] == "ws_access" for r in records)

    # The file an operator would feed it, with some rubbish and a stale record.
    log = tmp_path / "emergence.log"
    stale = dict(records[0], timestamp="2000-01-01T00:00:00.000+00:00")
    garbage = ["Traceback (most recent call last):", "\x00\x7f not json {", "[1, 2]"]
    log.write_text(text + "\n".join([*garbage, json.dumps(stale)]) + "\n")

    done = manage("log_report", str(log), "--json")
    assert done.returncode == 2, done.stderr  # CRITICAL: the database was unavailable
    assert done.stderr.strip().startswith("CommandError: status CRITICAL")
    report = json.loads(done.stdout)

    def count(event: str) -> int:
        return sum(1 for r in records if r["event"] == event)

    reasons = Counter(r["reason"] for r in records if r["event"] == "ws_disconnect")
    assert reasons["normal_closure"] == 2
    assert reasons["going_away"] == 1
    assert reasons["abnormal_closure"] == 1
    assert reasons["try_again_later"] == 1
    assert report["disconnects_by_reason"] == dict(reasons)
    assert report["db"] == {
        "lost": count("db_connection_lost"),
        "reconnected": count("db_reconnected"),
        "unavailable": count("db_unavailable"),
    }
    assert report["db"]["unavailable"] == 1
    assert report["db"]["lost"] >= 4  # one or more on the terminate, 3 in the cut
    assert report["db"]["reconnected"] >= 1
    assert report["detach"] == {
        "cancelled": count("user_detach_cancelled"),
        "executed": count("user_detach_executing"),
    }
    assert report["detach"]["cancelled"] >= 1 and report["detach"]["executed"] >= 2
    levels = Counter(r["level"] for r in [*records, stale])
    assert report["summary"] == {
        "errors": levels["ERROR"] + levels["CRITICAL"],
        "warnings": levels["WARNING"],
        "logs_analyzed": len(records) + 1,
        "garbage": len(garbage),
        "filtered_out": 0,
    }
    assert report["status"] == "CRITICAL"
    assert any(r.startswith("db_unavailable 1 >= ") for r in report["status_reasons"])
    assert report["top_errors"][0]["event"] == "db_unavailable"
    assert report["top_errors"][0]["count"] == 1

    # --since by the record timestamps: the stale record drops out, nothing else.
    since = manage("log_report", str(log), "--since", "1h", "--json")
    recent = json.loads(since.stdout)
    assert recent["summary"]["filtered_out"] == 1
    assert recent["summary"]["logs_analyzed"] == len(records)
    first = datetime.fromisoformat(records[0]["timestamp"])
    assert datetime.now(tz=UTC) - first < timedelta(hours=1)

    text_report = manage("log_report", str(log))
    assert text_report.returncode == 2
    assert text_report.stdout.startswith("Emergence log report: CRITICAL\n")
    (tmp_path / "report.txt").write_text(text_report.stdout)
    print(f"\n[LOG REPORT]\n{text_report.stdout}")
