"""Storms: a connect storm and a fast-retry reconnect storm, and the bench's sizes.

Measured like bench/scenarios.py's figures, against a started Cluster, for Emergence
and its baselines alike. The arithmetic (tallies, liveness windows) is kept apart
from the sockets so that it can be unit-tested. StormSizes adds the sizes of these
and of bench/capacity.py to bench/scenarios.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass

from websockets.exceptions import ConnectionClosed

from bench import scenarios
from bench.harness import ROOT, Cluster
from bench.load import (
    CONNECT_ERRORS,
    ConnectError,
    Sock,
    abort_all,
    close_all,
    connect,
)
from bench.scenarios import ms, percentile
from bench.servers import Server

# The storm's clients retry this often (uniform), with no backoff.
RETRY_EVERY_S = (0.2, 1.0)
# One attempt (handshake, then up to the presence frame) gives up after this, as
# the web client's CONNECT_TIMEOUT_MS (static/chat/app.js).
ATTEMPT_TIMEOUT_S = 15.0
# Liveness probed this long before the drop: the calm figure to compare with.
SETTLE_S = 1.0


@dataclass(frozen=True)
class StormSizes(scenarios.Sizes):
    """The scenarios' sizes plus those of the storms and of the rate search."""

    connect_storm_sockets: int = 2_000
    connect_storm_concurrency: int = 20
    rate_pairs: int = 50
    rate_steps: tuple[int, ...] = (200, 400, 800, 1_600, 3_200, 6_400)
    rate_step_seconds: float = 3.0
    rate_p99_ms: float = 100.0
    rate_drain_seconds: float = 30.0
    retry_sockets: int = 2_000
    retry_bound_seconds: float = 90.0
    # Runs that include the fast-retry storm (the longest figure): the first ones.
    retry_runs: int = 2


FULL = StormSizes()
QUICK = StormSizes(
    **asdict(scenarios.QUICK),
    connect_storm_sockets=200,
    rate_steps=(100, 200, 400),
    rate_step_seconds=1.0,
    rate_drain_seconds=10.0,
    retry_sockets=200,
    retry_bound_seconds=30.0,
)


def refusal(exc: BaseException) -> str:
    """What a failed connect was: overloaded, fatal (a 44xx close), timeout, other."""
    if isinstance(exc, ConnectError) and exc.code == "overloaded":
        return "overloaded"
    closed = exc.rcvd if isinstance(exc, ConnectionClosed) else None
    if closed is not None and 4400 <= closed.code < 4500:
        return "fatal"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "other"


def retry_delay(exc: BaseException, rng: random.Random) -> float:
    """Seconds until the next attempt: the server's retry_after_ms, else 0.2–1 s."""
    if isinstance(exc, ConnectError) and exc.retry_after_ms is not None:
        return exc.retry_after_ms / 1000
    return rng.uniform(*RETRY_EVERY_S)


# --- connect storm -------------------------------------------------------------------


async def connect_storm(cluster: Cluster, sizes: StormSizes) -> dict:
    """N sockets opened K at a time on one instance and kept open: wall time, latency.

    A socket's latency runs from its attempt to the first frame the server sent
    (Emergence: `ws:session_established`). The echo servers send nothing on open:
    theirs ends at the handshake, the first thing they answer.
    """
    n = sizes.connect_storm_sockets
    gate = asyncio.Semaphore(sizes.connect_storm_concurrency)
    threads = max(1, n // 100)
    timings: list[tuple[float, float, float]] = []
    socks: list[Sock] = []
    tally: Counter[str] = Counter()

    async def one(i: int) -> None:
        async with gate:
            marks: dict[str, float] = {}
            began = time.perf_counter()
            try:
                sock = await connect(
                    cluster,
                    cluster.servers[0],
                    f"cs-{i}",
                    f"cs-t{i % threads}",
                    marks=marks,
                )
            except CONNECT_ERRORS as exc:
                tally[refusal(exc)] += 1
                return
            usable = time.perf_counter() - began
            socks.append(sock)
            shake = marks["handshake"] - began
            first = marks.get("first_frame", marks["handshake"]) - began
            timings.append((shake, first, usable))

    began = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - began
    await close_all(socks)
    return connect_storm_figures(n, wall, timings, tally)


def connect_storm_figures(
    n: int, wall: float, timings: list[tuple[float, float, float]], tally: Counter
) -> dict:
    """Figures of a connect storm from (handshake, first frame, usable) seconds."""
    shakes = [t[0] for t in timings]
    firsts = [t[1] for t in timings]
    usable = [t[2] for t in timings]
    return {
        "sockets": n,
        "opened": len(timings),
        "failures": sum(tally.values()) - tally["overloaded"],
        "overloaded": tally["overloaded"],
        "wall_s": round(wall, 2),
        "connects_per_s": round(len(timings) / wall, 1) if wall > 0 else math.nan,
        "first_frame_p50_ms": ms(percentile(firsts, 50)),
        "first_frame_p99_ms": ms(percentile(firsts, 99)),
        "handshake_p99_ms": ms(percentile(shakes, 99)),
        "usable_p99_ms": ms(percentile(usable, 99)),
    }


# --- fast-retry reconnect storm ------------------------------------------------------


class FastRetry:
    """A client that retries every 0.2–1 s, no backoff, but waits when overloaded."""

    def __init__(self, cluster: Cluster, index: int, threads: int) -> None:
        self.cluster = cluster
        self.session = f"fr-{index}"
        self.thread = f"fr-t{index % threads}"
        self.rng = random.Random(index)
        self.tally: Counter[str] = Counter()
        self.sock: Sock | None = None

    async def back(self, deadline: float) -> float | None:
        """Attempt until usable (its perf_counter), a 44xx close or the deadline."""
        while (now := time.perf_counter()) < deadline:
            self.tally["attempts"] += 1
            try:
                self.sock = await connect(
                    self.cluster,
                    self.cluster.servers[0],
                    self.session,
                    self.thread,
                    timeout=min(ATTEMPT_TIMEOUT_S, max(1.0, deadline - now)),
                )
                return time.perf_counter()
            except CONNECT_ERRORS as exc:
                kind = refusal(exc)
                self.tally[kind] += 1
                if kind == "fatal":
                    return None
                wait = retry_delay(exc, self.rng)
            await asyncio.sleep(min(wait, max(0.0, deadline - time.perf_counter())))
        return None


async def retry_storm(cluster: Cluster, sizes: StormSizes) -> dict:
    """N clients dropped at once, back with a fixed 0.2–1 s retry and no backoff.

    The drop is a TCP abort of every socket by the clients, as in reconnect_storm;
    each client then retries at once and every 0.2–1 s, waiting an error frame's
    retry_after_ms (`overloaded`) instead when it gets one. Bounded in time; a
    liveness probe in a process of its own runs from before the drop to the end.
    """
    n, bound = sizes.retry_sockets, sizes.retry_bound_seconds
    clients = [FastRetry(cluster, i, max(1, n // 100)) for i in range(n)]
    await _establish(clients, deadline_s=120.0)
    storm: Counter[str] = Counter()
    for client in clients:
        client.tally = storm
    probe = await _start_probe(cluster.servers[0], SETTLE_S + bound + 15)
    try:
        await asyncio.sleep(SETTLE_S)
        drop_wall, dropped = time.time(), time.perf_counter()
        abort_all([c.sock for c in clients if c.sock is not None])
        for client in clients:
            client.sock = None
        back = await asyncio.gather(*(c.back(dropped + bound) for c in clients))
        # Whatever the speed, at least a second of the storm is probed.
        end_wall = max(time.time(), drop_wall + 1.0)
        await asyncio.sleep(max(0.0, end_wall - time.time()))
        samples = await _stop_probe(probe)
    finally:
        if probe.returncode is None:
            probe.kill()
            await probe.wait()
        await close_all([c.sock for c in clients if c.sock is not None])
    times = [None if t is None else t - dropped for t in back]
    return {
        **storm_figures(times, storm, bound),
        **liveness_figures(samples, drop_wall, end_wall),
    }


async def _establish(clients: list[FastRetry], deadline_s: float) -> None:
    """Connect every client before the storm (bounded); raise if one is not in."""
    gate = asyncio.Semaphore(50)
    deadline = time.perf_counter() + deadline_s

    async def one(client: FastRetry) -> None:
        async with gate:
            await client.back(deadline)

    await asyncio.gather(*(one(c) for c in clients))
    missing = sum(c.sock is None for c in clients)
    if missing:
        abort_all([c.sock for c in clients if c.sock is not None])
        raise RuntimeError(
            f"{missing} of {len(clients)} sockets failed before the storm"
        )


async def _start_probe(server: Server, seconds: float) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.probe",
        f"{server.http}/health/liveness",
        "--seconds",
        str(seconds),
        "--wall-clock",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )


async def _stop_probe(probe: asyncio.subprocess.Process) -> list:
    """SIGTERM the probe (it finishes its probe under way) and read its samples."""
    with contextlib.suppress(ProcessLookupError):
        probe.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(probe.communicate(), 30)
    return json.loads(out)


def storm_figures(times: list[float | None], tally: Counter, bound: float) -> dict:
    """Figures of a storm from each client's seconds until back (None: not back)."""
    back = [t for t in times if t is not None]
    gave_up = tally["fatal"]
    return {
        "clients": len(times),
        "back": len(back),
        "gave_up": gave_up,
        "not_back": len(times) - len(back) - gave_up,
        "bound_s": bound,
        "all_back_s": round(max(back), 2)
        if back and len(back) == len(times)
        else math.nan,
        "p50_back_s": round(percentile(back, 50), 2),
        "p99_back_s": round(percentile(back, 99), 2),
        "attempts": tally["attempts"],
        "overloaded": tally["overloaded"],
        "other_failures": tally["timeout"] + tally["other"],
        "timeouts": tally["timeout"],
    }


def liveness_figures(samples: list, start: float, end: float) -> dict:
    """Liveness probes begun from `start` to `end` (Unix times), and calm before."""
    during = [lat for at, lat in samples if start <= at <= end]
    ok = [lat for lat in during if lat is not None]
    calm = [lat for at, lat in samples if at < start and lat is not None]
    return {
        "probes": len(during),
        "probe_failures": len(during) - len(ok),
        "calm_p99_ms": percentile(calm, 99),
        "liveness_p50_ms": percentile(ok, 50),
        "liveness_p99_ms": percentile(ok, 99),
        "liveness_max_ms": max(ok, default=math.nan),
    }
