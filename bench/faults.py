"""Fault suite: real PostgreSQL, Redis, process and network faults under load.

    python -m bench.faults [--quick] [--json PATH] [--only name,...] [--keep-logs]
                           [--kill-interval SECONDS]

Each scenario breaks something for real on a private PostgreSQL 15 cluster and a
private Redis (bench/infra.py; never the machine's shared servers), with Emergence
instances started by bench.harness, and checks what a user would see:

- pg_terminate: a connect storm while pg_terminate_backend kills the app's backends
  every 0.5 s (--kill-interval); every client must get in (retrying as the web
  client does); the first-attempt success rate is reported as a figure;
- pg_stop: PostgreSQL stopped 5 s while clients connect and chat: 1013 (after a
  db_unavailable error frame), then recovery with no server restart;
- redis_restart: Redis restarted during chat across two instances;
- kill9: one of two instances killed with SIGKILL during chat; clients fail over;
- abort_storm: hundreds of sockets aborted at once (no close frame, no FIN
  handshake) while others chat; the server keeps serving and broadcasts the leave.

For each: messages sent vs delivered (equal once clients resumed), duplicates (0),
ERROR records not caused by the injected fault (0) and the time to recover. Exit 1
when an invariant fails.

Clients follow the web client's reconnect policy (bench/chatload.py) with the backoff
cap lowered from 30 s to 5 s so that every run is bounded. pg_stop runs its instance
with DB_MAX_RETRIES=2, DB_RETRY_DELAY=0.25 (a retry window of ~3.5 s instead of
~7 s) so that a 5 s outage outlasts the window and 1013 is certain.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg
import websockets

from bench import harness
from bench.chatload import (
    ChatClient,
    ClientConfig,
    chat_traffic,
    fetch_token,
    settle,
    wait_all_ready,
)
from bench.harness import Cluster
from bench.infra import PrivatePostgres, PrivateRedis
from bench.load import ConnectError, overloaded_wait
from bench.servers import Server

logger = logging.getLogger("bench.faults")

STORM_USER = "storm"
STORM_PASSWORD = "storm-password-1"
APP_NAME_PATTERN = "emergence-bench-%"
# ERROR records that report a real infrastructure outage (PROTOCOL.md §3), not a
# client: reported in their own column, never counted as client-caused.
INFRA_EVENTS = frozenset(
    {
        "db_unavailable",  # ops/db.py: the DB stayed down through retries
        "channel_layer_unavailable",  # chat/consumers.py: Redis (layer) lost
        "broadcast_failed",  # chat/sockets.py: group_send to Redis failed
        "group_discard_failed",  # chat/sockets.py: Redis gone at disconnect
    }
)
# Library loggers whose ERRORs are connection failures to PostgreSQL. Not
# channels_redis: ops/logs.py already downgrades its Redis-outage records, so
# an ERROR left from it is something else (a cancelled cleanup, a bug).
INFRA_LOGGERS = ("psycopg.pool",)


@dataclass
class Mode:
    """Counts and waits of one run mode."""

    storm_sockets: int
    chatters: int  # per instance
    senders: int
    rate: float  # messages per second per sender
    before_s: float  # chat before the fault
    after_s: float  # chat after the fault healed
    pg_down_s: float
    redis_down_s: float
    abort_sockets: int
    grace_s: float  # WS_CLEANUP_GRACE_SECONDS
    settle_s: float
    storm_wait_s: float  # how long the connect storm may take at most
    # pg_terminate_backend period: every backend of the app dies twice a second for
    # the whole storm. At 0.25 s and below the pool cannot keep a connection alive
    # long enough and ~1-10 % of first connects get 1013 (they get in on retry;
    # at 0.1 s first-attempt connects fell to 80-95 % on a 2-core box).
    kill_interval_s: float = 0.5
    client: ClientConfig = field(default_factory=ClientConfig)


QUICK = Mode(
    storm_sockets=100,
    chatters=6,
    senders=4,
    rate=4.0,
    before_s=1.0,
    after_s=1.5,
    pg_down_s=5.0,
    redis_down_s=1.0,
    abort_sockets=100,
    grace_s=1.0,
    settle_s=20.0,
    storm_wait_s=20.0,
    client=ClientConfig(backoff_base=0.25, backoff_cap=2.0, ack_timeout=3.0),
)
FULL = Mode(
    storm_sockets=500,
    chatters=20,
    senders=10,
    rate=2.0,
    before_s=3.0,
    after_s=5.0,
    pg_down_s=5.0,
    redis_down_s=2.0,
    abort_sockets=500,
    grace_s=5.0,
    settle_s=60.0,
    storm_wait_s=90.0,
    client=ClientConfig(backoff_base=0.5, backoff_cap=5.0),
)


@dataclass
class Result:
    """One scenario's figures and verdict."""

    name: str
    sockets: int = 0
    sent: int = 0
    acked: int = 0
    delivered: int = 0  # sent messages that reached every receiver
    receivers: int = 0
    deliveries: int = 0
    expected_deliveries: int = 0
    duplicates: int = 0
    redelivered: int = 0
    duplicate_acks: int = 0
    http_messages: int = 0
    reconnects: int = 0
    close_codes: dict[str, int] = field(default_factory=dict)
    client_errors: int = 0
    client_error_events: dict[str, int] = field(default_factory=dict)
    infra_errors: int = 0
    infra_error_events: dict[str, int] = field(default_factory=dict)
    recover_s: float | None = None
    figure: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failures

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.failures.append(message)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["passed"] = self.passed
        return out


@dataclass
class Context:
    """What every scenario shares: the private services, the mode, the log dir."""

    pg: PrivatePostgres
    redis: PrivateRedis
    mode: Mode
    quick: bool
    log_dir: Path

    def cluster(self, name: str, instances: int, **env: str) -> Cluster:
        """Emergence instances on the private PostgreSQL and Redis."""
        env.setdefault("WS_CLEANUP_GRACE_SECONDS", str(self.mode.grace_s))
        return Cluster(
            "emergence",
            instances,
            log_dir=self.log_dir / name,
            pg=self.pg.base,
            REDIS_URL=self.redis.url(),
            **env,
        )


# --- helpers shared by the scenarios ------------------------------------------------


def new_thread(name: str) -> str:
    return f"faults-{name}-{uuid.uuid4().hex[:8]}"


def clients_for(
    ctx: Context, servers: list[Server], token: str, thread: str, per_server: int
) -> list[ChatClient]:
    """`per_server` clients on each server, each failing over to the others."""
    out = []
    for i, server in enumerate(servers):
        others = [s.ws for s in servers if s is not server]
        for j in range(per_server):
            out.append(
                ChatClient(
                    f"c{i}{j}",
                    [server.ws, *others],
                    token,
                    thread,
                    config=ctx.mode.client,
                    seed=i * 1000 + j,
                    last_seq=0,
                )
            )
    return out


def classify_errors(cluster: Cluster, result: Result) -> None:
    """Split the servers' ERROR records into infrastructure and client-caused."""
    infra: Counter = Counter()
    client: Counter = Counter()
    for record in cluster.error_records():
        event = str(record.get("event") or record.get("logger") or "?")
        source = str(record.get("logger") or "")
        if event in INFRA_EVENTS or source.startswith(INFRA_LOGGERS):
            infra[event] += 1
        else:
            client[event] += 1
            logger.warning("client-caused ERROR record: %s", record)
    result.infra_errors = sum(infra.values())
    result.infra_error_events = dict(infra)
    result.client_errors = sum(client.values())
    result.client_error_events = dict(client)


def tally(
    result: Result, clients: list[ChatClient], receivers: list[ChatClient]
) -> None:
    """Sent, acked, delivered and duplicates over every client."""
    acked_ids = {i for c in clients for i in c.acks}
    result.sent = sum(c.stats.sent for c in clients)
    result.acked = len(acked_ids)
    result.receivers = len(receivers)
    result.expected_deliveries = result.acked * len(receivers)
    result.deliveries = sum(len(acked_ids & r.ids.keys()) for r in receivers)
    result.delivered = sum(1 for i in acked_ids if all(i in r.ids for r in receivers))
    lagging = [r for r in receivers if not r.has(acked_ids)]
    if lagging or any(c.unacked for c in clients):
        # Enough to tell a lost message from a client that never got back.
        result.extra["lagging"] = {
            r.name: {
                "ready": r.ready,
                "missing": len(r.missing(acked_ids)),
                "unacked": r.unacked,
                "last_seq": r.last_seq,
                "known_seq": r.known_seq,
                "attempts": [a.outcome for a in r.attempts][-6:],
                "errors": dict(r.stats.errors),
            }
            for r in [*lagging, *(c for c in clients if c.unacked)][:8]
        }
    everyone = {*clients, *receivers}
    result.duplicates = sum(c.stats.duplicates for c in everyone)
    result.redelivered = sum(c.stats.redelivered for c in everyone)
    result.duplicate_acks = sum(c.stats.duplicate_acks for c in clients)
    result.http_messages = sum(c.stats.http_messages for c in everyone)
    result.reconnects = sum(c.stats.reconnects for c in everyone)
    codes: Counter = Counter()
    for c in everyone:
        codes.update({str(k): v for k, v in c.stats.close_codes.items()})
    result.close_codes = dict(codes)
    fatal = [c.fatal_code for c in everyone if c.fatal_code]
    result.check(not fatal, f"clients stopped by close codes {fatal}")
    result.check(result.acked == result.sent, f"acked {result.acked} != sent")
    result.check(
        result.delivered == result.sent,
        f"delivered {result.delivered} != sent {result.sent}",
    )
    result.check(result.duplicates == 0, f"{result.duplicates} duplicate deliveries")


def common_checks(result: Result) -> None:
    result.check(
        result.client_errors == 0,
        f"{result.client_errors} client-caused ERROR records "
        f"{result.client_error_events}",
    )


async def stop_all(clients: list[ChatClient]) -> None:
    await asyncio.gather(*(c.stop() for c in clients), return_exceptions=True)


async def probe_delivery(
    sender: ChatClient, receivers: list[ChatClient], since: float, timeout: float
) -> float | None:
    """Submit one message now; seconds from `since` until every receiver has it."""
    msg_id = sender.submit("recovery probe")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(msg_id in r.ids for r in receivers) and all(r.ready for r in receivers):
            return time.monotonic() - since
        await asyncio.sleep(0.02)
    return None


async def one_connect(url: str, token: str, timeout: float) -> dict[str, Any]:
    """A single connect attempt: established, or how it was refused."""
    started = time.monotonic()
    out: dict[str, Any] = {"started": started, "outcome": "", "error_frame": None}
    try:
        async with websockets.connect(
            url,
            subprotocols=["jwt", token],
            open_timeout=timeout,
            close_timeout=2,
            ping_interval=None,
            proxy=None,
        ) as ws:
            first = json.loads(await asyncio.wait_for(ws.recv(), timeout))
            if first.get("type") == "ws:session_established":
                out["outcome"] = "established"
            else:
                out["error_frame"] = first.get("code")
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.recv(), timeout)
                out["outcome"] = f"close:{ws.close_code}"
    except websockets.ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd else 1006
        out["outcome"] = f"close:{code}"
    except (OSError, websockets.InvalidHandshake, TimeoutError) as exc:
        out["outcome"] = f"refused:{type(exc).__name__}"
    out["ended"] = time.monotonic()
    return out


# --- scenarios ----------------------------------------------------------------------


def pg_terminate(ctx: Context) -> Result:
    """A connect storm while the app's PostgreSQL backends are being terminated."""
    mode = ctx.mode
    result = Result("pg_terminate", sockets=mode.storm_sockets)
    with ctx.cluster("pg_terminate", 1) as cluster:
        asyncio.run(_pg_terminate(ctx, cluster, result))
        classify_errors(cluster, result)
    common_checks(result)
    return result


async def _pg_terminate(ctx: Context, cluster: Cluster, result: Result) -> None:
    mode = ctx.mode
    server = cluster.servers[0]
    thread = new_thread("pgterm")
    stop = asyncio.Event()
    killed = 0
    rounds = 0

    async def killer() -> None:
        nonlocal killed, rounds
        dsn = f"{ctx.pg.url(harness.DB_NAME)}?application_name=faults-killer"
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            deadline = time.monotonic() + 120
            while not stop.is_set() and time.monotonic() < deadline:
                cur = await conn.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                    "FROM pg_stat_activity WHERE application_name LIKE %s "
                    "AND pid <> pg_backend_pid()",
                    (APP_NAME_PATTERN,),
                )
                row = await cur.fetchone()
                killed += row[0] if row else 0
                rounds += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), mode.kill_interval_s)

    kill_task = asyncio.create_task(killer())
    clients = [
        ChatClient(
            f"s{i}", [server.ws], cluster.token, thread, config=mode.client, last_seq=0
        )
        for i in range(mode.storm_sockets)
    ]
    try:
        await asyncio.sleep(0.3)  # the killer is running before the storm starts
        storm_started = time.monotonic()
        for c in clients:
            c.start()
        ready = await wait_all_ready(clients, mode.storm_wait_s)
        storm_s = time.monotonic() - storm_started
        stuck = {
            c.name: [
                (a.outcome, round(a.started - storm_started, 2)) for a in c.attempts
            ]
            for c in clients
            if not c.ready
        }
        first_ok = sum(
            1 for c in clients if c.attempts and c.attempts[0].outcome == "established"
        )
        connect_times = sorted(
            c.attempts[0].established_at - c.attempts[0].started
            for c in clients
            if c.attempts and c.attempts[0].established_at is not None
        )
        senders = clients[: mode.senders]
        await chat_traffic(senders, rate=mode.rate, duration=mode.before_s + 1)
        stop.set()
        await kill_task
        healed_at = time.monotonic()
        # Recovered: every client connected and every message everywhere.
        settled = await settle(senders, clients, mode.settle_s)
        recover = time.monotonic() - healed_at
        ready_after = sum(c.ready for c in clients)
    finally:
        stop.set()
        if not kill_task.done():
            kill_task.cancel()
        with contextlib.suppress(BaseException):
            await kill_task
        await stop_all(clients)
    tally(result, senders, clients)
    result.recover_s = round(recover, 2) if settled else None
    rate = first_ok / len(clients)
    # A storm larger than WS_MAX_CONNECTING has first attempts refused `overloaded`
    # (1013) whatever the database does: told apart from the fault's own failures.
    firsts = Counter(c.attempts[0].outcome for c in clients if c.attempts)
    firsts.pop("established", None)
    others = ", ".join(f"{n} {outcome}" for outcome, n in firsts.most_common())
    p99 = connect_times[int(0.99 * (len(connect_times) - 1))] if connect_times else 0
    result.figure = (
        f"connect success {rate:.1%} ({first_ok}/{len(clients)}; other first "
        f"attempts: {others or 'none'}), "
        f"{killed} backends killed every {mode.kill_interval_s:g}s"
    )
    result.extra.update(
        connect_success_rate=rate,
        first_attempt_ok=first_ok,
        first_attempt_failures=dict(firsts),
        established_during_storm=ready,
        established_after_kills_stopped=ready_after,
        backends_killed=killed,
        killer_rounds=rounds,
        storm_s=round(storm_s, 2),
        not_established=dict(list(stuck.items())[:10]),
        connect_p99_s=round(p99, 3),
        connect_max_s=round(connect_times[-1], 3) if connect_times else None,
    )
    # The guarantee is that everyone gets in and nothing is lost; how many needed a
    # retry depends on how busy the box is, so it is a figure, not a verdict.
    result.check(
        ready_after == len(clients),
        f"{len(clients) - ready_after} of {len(clients)} clients never got in",
    )
    result.check(killed > 0, "no backend was terminated: the fault did not happen")
    result.check(settled, "did not settle: messages unacked or undelivered")


def pg_stop(ctx: Context) -> Result:
    """PostgreSQL stopped for 5 s while clients connect and chat; no server restart."""
    result = Result("pg_stop")
    # A retry window (~3.5 s) shorter than the outage, so that 1013 must happen.
    with ctx.cluster(
        "pg_stop", 1, DB_MAX_RETRIES="2", DB_RETRY_DELAY="0.25"
    ) as cluster:
        pid = cluster.servers[0].proc.pid if cluster.servers[0].proc else None
        asyncio.run(_pg_stop(ctx, cluster, result))
        server = cluster.servers[0]
        same = server.proc is not None and server.proc.poll() is None
        result.check(same and server.proc.pid == pid, "the server restarted or died")
        classify_errors(cluster, result)
    common_checks(result)
    return result


async def _pg_stop(ctx: Context, cluster: Cluster, result: Result) -> None:
    mode = ctx.mode
    server = cluster.servers[0]
    thread = new_thread("pgstop")
    clients = clients_for(ctx, [server], cluster.token, thread, mode.chatters)
    result.sockets = len(clients)
    probes: list[dict[str, Any]] = []
    stop = asyncio.Event()

    async def prober() -> None:
        # A new client every 250 ms, as users keep opening the page (bounded).
        tasks = []
        for n in range(400):
            if stop.is_set():
                break
            url = f"{server.ws}/ws/probe-{n}-{uuid.uuid4().hex[:6]}/?thread_id={thread}"
            tasks.append(asyncio.create_task(one_connect(url, cluster.token, 15)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)
        probes.extend(await asyncio.gather(*tasks))

    try:
        for c in clients:
            c.start()
        await wait_all_ready(clients, 30)
        probe_task = asyncio.create_task(prober())
        senders = clients[: mode.senders]
        total = mode.before_s + mode.pg_down_s + mode.after_s + 2
        traffic = asyncio.create_task(
            chat_traffic(senders, rate=mode.rate, duration=total)
        )
        await asyncio.sleep(mode.before_s)
        await asyncio.to_thread(ctx.pg.stop, "fast")
        down_at = time.monotonic()
        await asyncio.sleep(mode.pg_down_s)
        await asyncio.to_thread(ctx.pg.start)
        up_at = time.monotonic()
        recover = await probe_delivery(senders[0], clients, up_at, 30)
        await traffic
        stop.set()
        await probe_task
        settled = await settle(senders, clients, mode.settle_s)
    finally:
        stop.set()
        await stop_all(clients)
    tally(result, senders, clients)
    refused_1013 = sum(1 for p in probes if p["outcome"] == "close:1013")
    frames = sum(1 for p in probes if p["error_frame"] == "db_unavailable")
    first_ok = min(
        (
            p["ended"] - up_at
            for p in probes
            if p["outcome"] == "established" and p["ended"] >= up_at
        ),
        default=None,
    )
    chat_1013 = result.close_codes.get("1013", 0)
    after_up = [p for p in probes if p["started"] >= up_at + 2]
    late_fail = [p["outcome"] for p in after_up if p["outcome"] != "established"]
    result.recover_s = round(first_ok, 2) if first_ok is not None else None
    result.figure = (
        f"1013: {refused_1013} connects + {chat_1013} chat sockets; "
        f"first connect {result.recover_s}s after PG up"
    )
    result.extra.update(
        outage_s=round(up_at - down_at, 2),
        probes=len(probes),
        probe_outcomes=dict(Counter(p["outcome"] for p in probes)),
        db_unavailable_frames=frames,
        first_connect_after_up_s=result.recover_s,
        message_recovery_s=round(recover, 2) if recover else None,
        probes_failing_2s_after_up=late_fail,
    )
    result.check(refused_1013 + chat_1013 > 0, "no 1013 during the outage")
    result.check(frames >= refused_1013, "1013 without a db_unavailable error frame")
    result.check(
        first_ok is not None, "no successful connect after PostgreSQL came back"
    )
    result.check(not late_fail, f"connects still failing after recovery: {late_fail}")
    result.check(recover is not None, "chat did not recover after PostgreSQL came back")
    result.check(settled, "did not settle: messages unacked or undelivered")


def redis_restart(ctx: Context) -> Result:
    """Redis restarted during chat between two instances."""
    result = Result("redis_restart")
    with ctx.cluster("redis_restart", 2) as cluster:
        asyncio.run(_redis_restart(ctx, cluster, result))
        classify_errors(cluster, result)
        result.check(
            all(s.proc is not None and s.proc.poll() is None for s in cluster.servers),
            "an instance died",
        )
    common_checks(result)
    return result


async def _redis_restart(ctx: Context, cluster: Cluster, result: Result) -> None:
    mode = ctx.mode
    thread = new_thread("redis")
    clients = clients_for(ctx, cluster.servers, cluster.token, thread, mode.chatters)
    result.sockets = len(clients)
    try:
        for c in clients:
            c.start()
        await wait_all_ready(clients, 30)
        # Senders on both instances: every message must cross Redis.
        senders = (
            clients[: mode.senders // 2]
            + clients[mode.chatters :][: mode.senders - mode.senders // 2]
        )
        total = mode.before_s + mode.redis_down_s + mode.after_s + 1
        traffic = asyncio.create_task(
            chat_traffic(senders, rate=mode.rate, duration=total)
        )
        await asyncio.sleep(mode.before_s)
        await asyncio.to_thread(ctx.redis.restart, mode.redis_down_s)
        up_at = time.monotonic()
        recover = await probe_delivery(senders[0], clients, up_at, 30)
        await traffic
        settled = await settle(senders, clients, mode.settle_s)
    finally:
        await stop_all(clients)
    tally(result, senders, clients)
    result.recover_s = round(recover, 2) if recover is not None else None
    result.figure = (
        f"Redis down {mode.redis_down_s:g}s; message delivered everywhere "
        f"{result.recover_s}s after it came back"
    )
    result.check(recover is not None, "chat did not recover after Redis came back")
    result.check(settled, "did not settle: messages unacked or undelivered")


def kill9(ctx: Context) -> Result:
    """One of two instances killed with SIGKILL during chat; clients fail over."""
    result = Result("kill9")
    with ctx.cluster("kill9", 2) as cluster:
        asyncio.run(_kill9(ctx, cluster, result))
        classify_errors(cluster, result)
    common_checks(result)
    return result


async def _kill9(ctx: Context, cluster: Cluster, result: Result) -> None:
    mode = ctx.mode
    victim, survivor = cluster.servers
    thread = new_thread("kill9")
    clients = clients_for(ctx, cluster.servers, cluster.token, thread, mode.chatters)
    result.sockets = len(clients)
    on_victim = clients[: mode.chatters]
    try:
        for c in clients:
            c.start()
        await wait_all_ready(clients, 30)
        senders = (
            on_victim[: mode.senders // 2]
            + clients[mode.chatters :][: mode.senders - mode.senders // 2]
        )
        total = mode.before_s + mode.after_s + 1
        traffic = asyncio.create_task(
            chat_traffic(senders, rate=mode.rate, duration=total)
        )
        await asyncio.sleep(mode.before_s)
        await asyncio.to_thread(victim.kill)
        killed_at = time.monotonic()
        recover = await probe_delivery(on_victim[0], clients, killed_at, 30)
        await traffic
        settled = await settle(senders, clients, mode.settle_s)
    finally:
        await stop_all(clients)
    tally(result, senders, clients)
    moved = sum(1 for c in on_victim if c.stats.reconnects > 0)
    result.recover_s = round(recover, 2) if recover is not None else None
    result.figure = f"{moved}/{len(on_victim)} clients failed over"
    result.extra.update(failed_over=moved, survivor_alive=survivor.proc.poll() is None)
    result.check(moved == len(on_victim), "not every client of the dead instance moved")
    result.check(recover is not None, "chat did not recover after the kill")
    result.check(settled, "did not settle: messages unacked or undelivered")


def abort_storm(ctx: Context) -> Result:
    """Hundreds of sockets aborted at once (no close frame) while others chat."""
    result = Result("abort_storm")
    with ctx.cluster("abort_storm", 1) as cluster:
        asyncio.run(_abort_storm(ctx, cluster, result))
        server = cluster.servers[0]
        closes = [
            r
            for r in server.records()
            if r.get("event") == "ws_disconnect" and r.get("user") == STORM_USER
        ]
        codes = Counter(r.get("code") for r in closes)
        result.extra.update(storm_disconnect_records=len(closes), codes=dict(codes))
        result.check(
            codes.get(1006, 0) == result.extra.get("aborted"),
            f"ws_disconnect 1006 records {dict(codes)} != aborted sockets",
        )
        classify_errors(cluster, result)
    common_checks(result)
    return result


async def _abort_storm(ctx: Context, cluster: Cluster, result: Result) -> None:
    mode = ctx.mode
    server = cluster.servers[0]
    thread = new_thread("abort")
    storm_token = await asyncio.to_thread(
        fetch_token, server.http, STORM_USER, STORM_PASSWORD
    )
    clients = clients_for(ctx, [server], cluster.token, thread, mode.chatters)
    storm: list[Any] = []
    result.sockets = len(clients) + mode.abort_sockets

    async def open_storm_socket(n: int) -> Any:
        url = f"{server.ws}/ws/storm-{n}-{uuid.uuid4().hex[:6]}/?thread_id={thread}"
        deadline = time.monotonic() + 60
        while True:
            ws = await websockets.connect(
                url,
                subprotocols=["jwt", storm_token],
                open_timeout=30,
                ping_interval=None,
                proxy=None,
            )
            # Fully joined: hello, then presence (the server is done with connect()).
            for _ in range(3):
                frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if frame.get("type") in ("presence", "error"):
                    break
            wait = overloaded_wait(ConnectError.from_frame(frame))
            if wait is None or time.monotonic() > deadline:
                return ws
            # Admission control refused it: come back when the server says, as
            # the web client does.
            await ws.close()
            await asyncio.sleep(wait)

    try:
        for c in clients:
            c.start()
        await wait_all_ready(clients, 30)
        opened = await asyncio.gather(
            *(open_storm_socket(n) for n in range(mode.abort_sockets)),
            return_exceptions=True,
        )
        storm = [ws for ws in opened if not isinstance(ws, BaseException)]
        senders = clients[: mode.senders]
        total = mode.before_s + mode.grace_s + mode.after_s + 1
        traffic = asyncio.create_task(
            chat_traffic(senders, rate=mode.rate, duration=total)
        )
        await asyncio.sleep(mode.before_s)
        for ws in storm:
            ws.transport.abort()  # RST, no close frame: the client vanished
        aborted_at = time.monotonic()
        live_t0 = time.monotonic()
        with harness.urlopen(f"{server.http}/health/liveness", timeout=5):
            liveness_ms = (time.monotonic() - live_t0) * 1000
        recover = await probe_delivery(senders[0], clients, aborted_at, 30)
        fresh = await one_connect(
            f"{server.ws}/ws/fresh-{uuid.uuid4().hex[:6]}/?thread_id={thread}",
            cluster.token,
            10,
        )
        leave_deadline = aborted_at + mode.grace_s + 10
        leave_at = None
        while time.monotonic() < leave_deadline:
            if all(_left(c, STORM_USER) for c in clients):
                leave_at = time.monotonic()
                break
            await asyncio.sleep(0.05)
        await traffic
        settled = await settle(senders, clients, mode.settle_s)
    finally:
        for ws in storm:
            with contextlib.suppress(Exception):
                ws.transport.abort()
        await stop_all(clients)
    tally(result, senders, clients)
    leaves = [
        sum(STORM_USER in f.get("leaves", []) for f in c.presence) for c in clients
    ]
    joins = [sum(STORM_USER in f.get("joins", []) for f in c.presence) for c in clients]
    result.recover_s = round(recover, 2) if recover is not None else None
    leave_s = round(leave_at - aborted_at, 2) if leave_at else None
    result.figure = (
        f"{len(storm)} aborted; liveness {liveness_ms:.0f} ms; "
        f"leave after {leave_s}s (grace {mode.grace_s:g}s)"
    )
    result.extra.update(
        aborted=len(storm),
        open_failures=len(opened) - len(storm),
        liveness_ms=round(liveness_ms, 1),
        fresh_connect=fresh["outcome"],
        leave_after_s=leave_s,
        leaves_per_chatter=sorted(set(leaves)),
        joins_per_chatter=sorted(set(joins)),
    )
    result.check(len(storm) == mode.abort_sockets, "some storm sockets never opened")
    result.check(fresh["outcome"] == "established", f"fresh connect: {fresh}")
    result.check(leave_at is not None, "no leave broadcast for the aborted user")
    result.check(set(leaves) == {1}, f"leaves per chatter {leaves}, expected one each")
    result.check(recover is not None, "chat stalled after the storm")
    result.check(settled, "did not settle: messages unacked or undelivered")


def _left(client: ChatClient, user: str) -> bool:
    return any(user in f.get("leaves", []) for f in client.presence)


SCENARIOS: dict[str, Callable[[Context], Result]] = {
    "pg_terminate": pg_terminate,
    "pg_stop": pg_stop,
    "redis_restart": redis_restart,
    "kill9": kill9,
    "abort_storm": abort_storm,
}


# --- the run ------------------------------------------------------------------------


def prepare(pg: PrivatePostgres, redis: PrivateRedis) -> None:
    """Migrate the private database once; create the bench and storm users."""
    harness.prepare_database(pg.base, REDIS_URL=redis.url())
    env = harness.emergence_env(
        "prepare", prefix="emergence-faults-prepare", pg=pg.base, REDIS_URL=redis.url()
    )
    subprocess.run(
        [
            sys.executable,
            "manage.py",
            "demo_user",
            "--username",
            STORM_USER,
            "--password",
            STORM_PASSWORD,
        ],
        cwd=harness.ROOT,
        env=env,
        check=True,
        capture_output=True,
    )


def table(results: list[Result]) -> str:
    """The results as a fixed-width text table."""
    head = (
        "scenario",
        "sockets",
        "sent",
        "delivered",
        "dups",
        "client ERR",
        "infra ERR",
        "recover s",
        "result",
        "figure",
    )
    rows = [head]
    for r in results:
        rows.append(
            (
                r.name,
                str(r.sockets),
                str(r.sent),
                str(r.delivered),
                str(r.duplicates),
                str(r.client_errors),
                str(r.infra_errors),
                "-" if r.recover_s is None else f"{r.recover_s:.2f}",
                "PASS" if r.passed else "FAIL",
                r.figure,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
    lines = []
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, row[-1]]))
    return "\n".join(lines)


def run(
    names: list[str], quick: bool, log_dir: Path, kill_interval: float = 0.5
) -> list[Result]:
    """Start the private services, run the scenarios in order, stop everything."""
    mode = replace(QUICK if quick else FULL, kill_interval_s=kill_interval)
    results = []
    with PrivatePostgres() as pg, PrivateRedis() as redis:
        prepare(pg, redis)
        ctx = Context(pg, redis, mode, quick, log_dir)
        for name in names:
            started = time.monotonic()
            try:
                if not pg.running():
                    pg.start()
                if not redis.running():
                    redis.start()
                result = SCENARIOS[name](ctx)
            except Exception as exc:
                logger.exception("scenario %s crashed", name)
                result = Result(name, failures=[f"crashed: {exc!r}"])
            result.duration_s = round(time.monotonic() - started, 1)
            print(
                f"{name}: {'PASS' if result.passed else 'FAIL'} "
                f"in {result.duration_s}s {result.figure}",
                flush=True,
            )
            results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the CI form (<= 90 s)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--keep-logs", action="store_true", help="keep server logs")
    parser.add_argument(
        "--kill-interval",
        type=float,
        default=0.5,
        help="pg_terminate: seconds between pg_terminate_backend rounds",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    log_dir = Path(tempfile.mkdtemp(prefix="emergence-faults-"))
    started = time.monotonic()
    results = run(names, args.quick, log_dir, args.kill_interval)
    elapsed = time.monotonic() - started
    ok = all(r.passed for r in results)
    print()
    print(table(results))
    for r in results:
        for failure in r.failures:
            print(f"FAIL {r.name}: {failure}")
    print(f"\n{'quick' if args.quick else 'full'} run: {elapsed:.1f}s, ", end="")
    print("all invariants hold" if ok else "INVARIANTS FAILED")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "mode": "quick" if args.quick else "full",
                    "elapsed_s": round(elapsed, 1),
                    "passed": ok,
                    "pid": os.getpid(),
                    "log_dir": str(log_dir),
                    "scenarios": [r.as_dict() for r in results],
                },
                indent=2,
            )
        )
    if ok and not args.keep_logs:
        shutil.rmtree(log_dir, ignore_errors=True)
    else:
        print(f"server logs: {log_dir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
