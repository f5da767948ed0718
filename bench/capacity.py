"""The highest message rate held across two instances, the offered rate stepped up.

Measured like bench/scenarios.py's figures, against a started Cluster, for Emergence
and its baselines alike; the step verdicts are kept apart from the sockets so that
they can be unit-tested.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from bench.harness import Cluster
from bench.load import Sock, abort_all, chat_frame, close_all, connect
from bench.scenarios import ms, percentile
from bench.storms import StormSizes

# A rate step counts only if the load generator offered at least this share of it.
MIN_PACE = 0.9


def frame_id(raw: str, prefix: str) -> str | None:
    """The `id` of a frame's raw text if it starts with `prefix` (either spacing)."""
    for key in ('"id":"', '"id": "'):
        at = raw.find(key + prefix)
        if at >= 0:
            start = at + len(key)
            end = raw.find('"', start)
            return raw[start:end] if end > start else None
    return None


class Arrivals:
    """Latency of each message of the current step, matched by id in the raw text."""

    def __init__(self) -> None:
        self.sent: dict[str, float] = {}
        self.arrived: dict[str, float] = {}

    def reset(self) -> None:
        self.sent, self.arrived = {}, {}

    def on_frame(self, raw: str, now: float) -> None:
        message_id = frame_id(raw, "m")
        if message_id in self.sent and message_id not in self.arrived:
            self.arrived[message_id] = now - self.sent[message_id]


def step_verdict(step: dict, limit_ms: float) -> str | None:
    """Why a rate step missed ("p99", "lost", "generator"), or None if it held."""
    if step["p99_ms"] > limit_ms:
        return "p99"
    if step["lost"]:
        return "lost"
    if step["sent_per_s"] < MIN_PACE * step["rate"]:
        return "generator"
    return None


def rate_figures(steps: list[dict], limit_ms: float) -> dict:
    """The search's figures: the highest step held, why it stopped, every step's.

    `lost` counts messages lost at steps whose p99 met the target: a server that
    keeps up must lose nothing. Past that (overload) losses are the step's figure.
    """
    held, lost, stopped_at, stopped_by = 0, 0, math.nan, "ceiling"
    per_step: dict = {}
    for step in steps:
        rate = step["rate"]
        per_step.update({f"at{rate}_{k}": v for k, v in step.items() if k != "rate"})
        if not step["p99_ms"] > limit_ms:
            lost += step["lost"]
        why = step_verdict(step, limit_ms)
        if why is not None:
            stopped_at, stopped_by = rate, why
            break
        held = rate
    return {
        "max_rate_per_s": held,
        "stopped_at_per_s": stopped_at,
        "stopped_by": stopped_by,
        "steps": len(steps),
        "lost": lost,
        **per_step,
    }


async def max_rate(cluster: Cluster, sizes: StormSizes) -> dict:
    """The highest offered rate, stepped up, with p99 ≤ the target and nothing lost.

    Pairs of sockets on different instances as in round_trip (half A→B, half B→A),
    the same sockets throughout; each step offers its rate for a few seconds, then
    waits (bounded) for every message. The search stops at the first step missed.
    """
    arrivals = Arrivals()
    senders, receivers = await _pairs(cluster, sizes.rate_pairs, arrivals.on_frame)
    steps: list[dict] = []
    try:
        await _warm(senders, arrivals)
        for step_no, rate in enumerate(sizes.rate_steps):
            steps.append(await _step(senders, arrivals, rate, sizes, step_no))
            if step_verdict(steps[-1], sizes.rate_p99_ms) is not None:
                break
            await asyncio.sleep(0.5)
    finally:
        await close_all(senders + receivers)
    return {
        "instances": len(cluster.servers),
        "pairs": sizes.rate_pairs,
        **rate_figures(steps, sizes.rate_p99_ms),
    }


async def _pairs(
    cluster: Cluster, pairs: int, on_frame: Callable[[str, float], None]
) -> tuple[list[Sock], list[Sock]]:
    """Sender on instance p % 2, receiver on the other, one thread per pair."""
    servers, gate = cluster.servers, asyncio.Semaphore(20)

    async def one(p: int, role: str) -> Sock:
        server = servers[(p + (role == "r")) % len(servers)]
        async with gate:
            return await connect(
                cluster,
                server,
                f"m{role}-{p}",
                f"m-t{p}",
                on_frame if role == "r" else None,
            )

    # Senders first: each thread exists before its receiver joins it.
    senders = await asyncio.gather(
        *(one(p, "s") for p in range(pairs)), return_exceptions=True
    )
    receivers = await asyncio.gather(
        *(one(p, "r") for p in range(pairs)), return_exceptions=True
    )
    failed = [x for x in senders + receivers if isinstance(x, BaseException)]
    if failed:
        abort_all([x for x in senders + receivers if isinstance(x, Sock)])
        raise failed[0]
    return list(senders), list(receivers)


async def _warm(senders: list[Sock], arrivals: Arrivals, bound: float = 10.0) -> None:
    """One message per pair, unmeasured: first-use costs are not a rate's figure."""
    arrivals.reset()
    for p, sender in enumerate(senders):
        arrivals.sent[f"mw-{p:03d}"] = time.perf_counter()
        await sender.send(chat_frame(f"mw-{p:03d}"))
    deadline = time.perf_counter() + bound
    while len(arrivals.arrived) < len(arrivals.sent) and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)


async def _step(
    senders: list[Sock], arrivals: Arrivals, rate: int, sizes: StormSizes, step_no: int
) -> dict:
    """Offer `rate` msg/s over every sender for one step; its latencies and losses."""
    pairs = len(senders)
    per_pair = max(1, round(rate * sizes.rate_step_seconds / pairs))
    period = pairs / rate
    arrivals.reset()
    start = time.perf_counter() + 0.05

    async def pump(p: int) -> None:
        offset = p * period / pairs
        for k in range(per_pair):
            due = start + offset + k * period
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            message_id = f"m{step_no}-{p:03d}-{k:06d}"
            arrivals.sent[message_id] = time.perf_counter()
            await senders[p].send(chat_frame(message_id))

    await asyncio.gather(*(pump(p) for p in range(pairs)))
    elapsed = time.perf_counter() - start
    deadline = time.perf_counter() + sizes.rate_drain_seconds
    while len(arrivals.arrived) < len(arrivals.sent) and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    latencies = list(arrivals.arrived.values())
    sent = len(arrivals.sent)
    return {
        "rate": rate,
        # A generator that keeps up ends on schedule: the scheduled span is the floor.
        "sent_per_s": round(sent / max(elapsed, per_pair * period), 1),
        "p50_ms": ms(percentile(latencies, 50)),
        "p99_ms": ms(percentile(latencies, 99)),
        "lost": sent - len(latencies),
    }
