"""The measured figures, one async function each, run against a started Cluster.

Each returns a flat dict of numbers (ms, KiB, counts). Every loop is bounded in
count and time; every socket it opens is closed or aborted before it returns.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from bench.harness import ROOT, Cluster
from bench.load import (
    CONNECT_ERRORS,
    ConnectError,
    Sock,
    abort_all,
    chat_frame,
    close_all,
    connect,
    connect_many,
    overloaded_wait,
)


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is: the issue's sizes, or a CI smoke run's."""

    idle_sockets: int = 10_000
    connect_rate: int = 200
    connect_seconds: float = 10.0
    rtt_rate: int = 500
    rtt_seconds: float = 10.0
    rtt_pairs: int = 50
    fanout_sockets: int = 1_000
    fanout_rounds: int = 5
    storm_sockets: int = 2_000
    storm_deadline: float = 60.0
    liveness_sockets: int = 1_000
    grace_seconds: float = 5.0
    pg_down_seconds: float = 3.0


FULL = Sizes()
QUICK = Sizes(
    idle_sockets=300,
    connect_rate=100,
    connect_seconds=1.0,
    rtt_rate=200,
    rtt_seconds=1.0,
    rtt_pairs=10,
    fanout_sockets=200,
    fanout_rounds=2,
    storm_sockets=200,
    storm_deadline=20.0,
    liveness_sockets=200,
    grace_seconds=0.5,
    pg_down_seconds=1.0,
)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: a p99 is a latency someone saw)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


async def idle_rss(cluster: Cluster, sizes: Sizes) -> dict:
    """RSS per idle socket on one fresh server process."""
    server = cluster.servers[0]
    # Warm up first: code paths, pools and caches are loaded once, not per socket.
    warm, _ = await connect_many(cluster, 50, threads=5, tag="warm")
    await close_all(warm)
    await asyncio.sleep(1.0)
    before = server.rss_kib()
    began = time.perf_counter()
    socks, failures = await connect_many(
        cluster, sizes.idle_sockets, threads=max(1, sizes.idle_sockets // 100), tag="i"
    )
    connect_s = time.perf_counter() - began
    await asyncio.sleep(3.0)
    after = server.rss_kib()
    opened = len(socks)
    abort_all(socks)
    return {
        "sockets": opened,
        "failures": failures,
        "rss_before_mib": round(before / 1024, 1),
        "rss_after_mib": round(after / 1024, 1),
        "kib_per_socket": round((after - before) / max(opened, 1), 1),
        "connects_per_s": round(opened / connect_s, 1),
    }


async def connect_latency(cluster: Cluster, sizes: Sizes) -> dict:
    """Connect + session load at a fixed arrival rate: open to usable, per socket."""
    count = int(sizes.connect_rate * sizes.connect_seconds)
    latencies: list[float] = []
    failed: list[str] = []  # the `error` frame's code, if any, of each failure
    socks: list[Sock] = []
    start = time.perf_counter()

    async def one(i: int) -> None:
        await asyncio.sleep(
            max(0.0, start + i / sizes.connect_rate - time.perf_counter())
        )
        began = time.perf_counter()
        try:
            sock = await connect(cluster, cluster.servers[0], f"c-{i}", f"c-t{i % 100}")
        except CONNECT_ERRORS as exc:
            failed.append(exc.code if isinstance(exc, ConnectError) else "")
            return
        latencies.append(time.perf_counter() - began)
        socks.append(sock)

    await asyncio.gather(*(one(i) for i in range(count)))
    achieved = count / (time.perf_counter() - start)
    await close_all(socks)
    return {
        "connects": count,
        "failures": len(failed),
        # Of the failures, refused by admission control (not retried here).
        "overloaded": failed.count("overloaded"),
        "offered_per_s": sizes.connect_rate,
        "achieved_per_s": round(achieved, 1),
        "p50_ms": ms(percentile(latencies, 50)),
        "p99_ms": ms(percentile(latencies, 99)),
        "max_ms": ms(max(latencies, default=float("nan"))),
    }


async def round_trip(cluster: Cluster, sizes: Sizes) -> dict:
    """Pairs of sockets on different instances, at a fixed total message rate.

    Half the pairs send from instance A to B and half from B to A, as a balanced
    cluster would. The time is from the send to the other instance's socket.
    """
    pairs = sizes.rtt_pairs
    per_pair = int(sizes.rtt_rate * sizes.rtt_seconds) // pairs
    period = pairs / sizes.rtt_rate
    sent: dict[str, float] = {}
    arrived: dict[str, float] = {}

    def receiver(raw: str, now: float) -> None:
        # Ids are fixed width ("r0000-00000"): slice after the id key, either JSON
        # spacing (Emergence sends compact JSON, the echo servers relay ours).
        at = raw.find('"id":"r')
        start = at + 6 if at >= 0 else raw.find('"id": "r') + 7
        if start > 6:
            message_id = raw[start : start + 11]
            if message_id in sent and message_id not in arrived:
                arrived[message_id] = now - sent[message_id]

    servers = cluster.servers
    senders, receivers = [], []
    for p in range(pairs):
        thread = f"r-t{p}"
        a, b = servers[p % len(servers)], servers[(p + 1) % len(servers)]
        senders.append(await connect(cluster, a, f"rs-{p}", thread))
        receivers.append(await connect(cluster, b, f"rr-{p}", thread, receiver))
    await asyncio.sleep(0.5)
    start = time.perf_counter() + 0.1

    async def pump(p: int) -> None:
        offset = p * period / pairs
        for k in range(per_pair):
            due = start + offset + k * period
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            message_id = f"r{p:04d}-{k:05d}"
            sent[message_id] = time.perf_counter()
            await senders[p].send(chat_frame(message_id))

    await asyncio.gather(*(pump(p) for p in range(pairs)))
    elapsed = time.perf_counter() - start
    # Anything the server queued still arrives: wait (bounded) before calling a
    # message lost; the latencies say how late it was.
    deadline = time.perf_counter() + 60
    while len(arrived) < len(sent) and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    await close_all(senders + receivers)
    latencies = list(arrived.values())
    return {
        "messages": len(sent),
        "lost": len(sent) - len(arrived),
        "sent_per_s": round(len(sent) / elapsed, 1),
        "instances": len(servers),
        "p50_ms": ms(percentile(latencies, 50)),
        "p99_ms": ms(percentile(latencies, 99)),
        "max_ms": ms(max(latencies, default=float("nan"))),
    }


async def fanout(cluster: Cluster, sizes: Sizes) -> dict:
    """One message to N sockets of one thread: time until the last has it."""
    n = sizes.fanout_sockets
    state = {"marker": "", "count": 0, "last": 0.0}
    done = asyncio.Event()

    def on_frame(raw: str, now: float) -> None:
        if state["marker"] and state["marker"] in raw:
            state["count"] += 1
            state["last"] = now
            if state["count"] == n:
                done.set()

    socks, failures = await connect_many(
        cluster, n, threads=1, tag="f", on_frame=lambda i: on_frame, setup=True
    )
    sender = await connect(cluster, cluster.servers[0], "f-sender", "f-t0")
    await asyncio.sleep(1.0)
    last_ms, missing = [], 0
    for round_no in range(sizes.fanout_rounds):
        marker = f"fan{round_no:03d}x"
        state.update(marker=marker, count=0, last=0.0)
        done.clear()
        began = time.perf_counter()
        await sender.send(chat_frame(marker))
        try:
            await asyncio.wait_for(done.wait(), 30)
        except TimeoutError:
            missing += n - state["count"]
        last_ms.append(ms(state["last"] - began))
        await asyncio.sleep(0.5)
    state["marker"] = ""
    abort_all(socks)
    await sender.close()
    return {
        "sockets": len(socks),
        "connect_failures": failures,
        "rounds": sizes.fanout_rounds,
        "missing": missing,
        "last_receiver_ms": statistics.median(last_ms),
        "last_receiver_best_ms": min(last_ms),
    }


async def reconnect_storm(cluster: Cluster, sizes: Sizes) -> dict:
    """N clients dropped at once (TCP abort), all reconnecting at once."""
    n = sizes.storm_sockets
    socks, failures = await connect_many(
        cluster, n, threads=max(1, n // 100), tag="rs", setup=True
    )
    assert not failures, f"{failures} of {n} sockets failed before the storm"
    await asyncio.sleep(1.0)
    attempts_failed = overloaded = 0
    back: list[Sock] = []
    started = time.perf_counter()
    abort_all(socks)
    rng = random.Random(1)

    async def again(i: int) -> float | None:
        nonlocal attempts_failed, overloaded
        attempt = 0
        while time.perf_counter() - started < sizes.storm_deadline:
            try:
                sock = await connect(
                    cluster, cluster.servers[0], f"rs-{i}", f"rs-t{i % (n // 100 or 1)}"
                )
            except CONNECT_ERRORS as exc:
                if (wait := overloaded_wait(exc)) is not None:
                    # The web client's policy: the server's retry_after_ms, and its
                    # own backoff does not grow (PROTOCOL.md §2.11).
                    overloaded += 1
                    await asyncio.sleep(wait)
                    continue
                attempts_failed += 1
                # The web client's policy: full-jitter backoff from 0.5 s.
                await asyncio.sleep(rng.uniform(0, min(30.0, 0.5 * 2**attempt)))
                attempt += 1
                continue
            back.append(sock)
            return time.perf_counter() - started
        return None

    times = await asyncio.gather(*(again(i) for i in range(n)))
    done = [t for t in times if t is not None]
    await asyncio.sleep(0.5)
    abort_all(back)
    return {
        "clients": n,
        "reestablished": len(done),
        "never_back": n - len(done),
        "failed_attempts": attempts_failed,
        "overloaded": overloaded,
        "all_back_s": round(max(done), 2) if len(done) == n else float("nan"),
        "p50_back_s": round(percentile(done, 50), 2),
    }


async def liveness_storm(cluster: Cluster, sizes: Sizes) -> dict:
    """Liveness latency from another process while N sockets drop at once."""
    n = sizes.liveness_sockets
    server = cluster.servers[0]
    socks, failures = await connect_many(
        cluster, n, threads=max(1, n // 100), tag="ls", setup=True
    )
    settle, tail = 1.0, sizes.grace_seconds + 3.0
    probe = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.probe",
        f"{server.http}/health/liveness",
        "--seconds",
        str(settle + tail),
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    await asyncio.sleep(settle)
    abort_all(socks)
    out, _ = await asyncio.wait_for(probe.communicate(), settle + tail + 30)
    samples = json.loads(out)
    during = [lat for at, lat in samples if at >= settle and lat is not None]
    calm = [lat for at, lat in samples if at < settle - 0.1 and lat is not None]
    failed = sum(1 for _, lat in samples if lat is None)
    return {
        "sockets": len(socks),
        "connect_failures": failures,
        "probes": len(samples),
        "probe_failures": failed,
        "calm_p99_ms": percentile(calm, 99),
        "p50_ms": percentile(during, 50),
        "p99_ms": percentile(during, 99),
        "max_ms": max(during, default=float("nan")),
    }


async def pg_restart(cluster: Cluster, pg, sizes: Sizes) -> dict:
    """PostgreSQL stopped and started: time from DB back to the first usable socket.

    Clients keep trying every 100 ms throughout (each attempt a new socket, as many
    browsers would); attempts during the outage end in `db_unavailable` + 1013.
    """
    server = cluster.servers[0]
    first = await connect(cluster, server, "pg-first", "pg-t0")
    await first.close()
    refused = 0
    successes: list[float] = []
    opened: list[Sock] = []
    marks: dict[str, float] = {}

    async def attempt(i: int) -> None:
        nonlocal refused
        try:
            sock = await connect(cluster, server, f"pg-{i}", "pg-t0")
        except CONNECT_ERRORS:
            refused += 1
            return
        successes.append(time.perf_counter())
        opened.append(sock)

    def restart() -> None:
        pg.stop()
        marks["down"] = time.perf_counter()
        time.sleep(sizes.pg_down_seconds)
        # Poll while it starts: pg_ctl's own wait returns later than the server
        # is ready, which would flatter the recovery figure.
        starter = threading.Thread(target=pg.start)
        starter.start()
        marks["back"] = db_back_at(pg)
        starter.join(60)

    restarting = asyncio.create_task(asyncio.to_thread(restart))
    tasks: list[asyncio.Task] = []
    deadline = time.perf_counter() + sizes.pg_down_seconds + 60
    i = 0
    while time.perf_counter() < deadline:
        if "back" in marks and any(t > marks["back"] for t in successes):
            break
        tasks.append(asyncio.create_task(attempt(i)))
        i += 1
        await asyncio.sleep(0.1)
    await restarting
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    abort_all(opened)
    after = [t for t in successes if t > marks["back"]]
    return {
        "down_s": round(marks["back"] - marks["down"], 2),
        "attempts": i,
        "refused": refused,
        "recovery_s": round(min(after) - marks["back"], 3) if after else float("nan"),
    }


def db_back_at(pg) -> float:
    """The moment the restarted server first accepts a query (polled every 10 ms)."""
    import psycopg

    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline:
        try:
            with psycopg.connect(pg.url("postgres"), connect_timeout=1) as conn:
                conn.execute("SELECT 1")
            return time.perf_counter()
        except psycopg.Error:
            time.sleep(0.01)
    raise RuntimeError("PostgreSQL did not come back")
