"""bench/RESULTS.md from a results JSON: the issue's table, then every figure."""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from bench import storms

COLUMNS = (
    ("emergence", "Emergence (Daphne)"),
    ("uvicorn", "Emergence (Uvicorn)"),
    ("channels-echo", "bare Channels echo"),
    ("websockets-echo", "bare websockets"),
)
SCENARIO_TITLES = {
    "idle_rss": "Idle sockets on one process",
    "connect_latency": "Connect + session load at a fixed rate",
    "round_trip": "Message round trip, sender on instance A, receiver on B",
    "fanout": "Fan-out: one message to N sockets of one thread",
    "reconnect_storm": "Reconnect storm: N clients dropped at once",
    "liveness_storm": "Liveness from another process during a disconnect storm",
    "pg_restart": "PostgreSQL restart: DB back to first usable socket",
    "page_load": "Chat page in Chromium (fresh context, then reload)",
    "connect_storm": "Connect storm: N sockets opened K at a time on one instance",
    "max_rate": "Highest message rate across two instances, p99 ≤ 100 ms, none lost",
    "retry_storm": "Fast-retry reconnect storm: N dropped, retrying every 0.2–1 s",
}
BASELINE = "channels-echo"
# Per-step figures of the rate search (at<rate>_<figure>): a table of their own.
STEP_KEY = re.compile(r"^at(\d+)_(.+)$")
STEP_FIELDS = ("sent_per_s", "p50_ms", "p99_ms", "lost")


def median(result: dict, scenario: str, target: str, key: str) -> float | None:
    value = result["figures"].get(scenario, {}).get(target, {}).get(key)
    if isinstance(value, dict):
        return value.get("median")
    if isinstance(value, int | float):
        return value
    return None


def fmt(value: Any) -> str:
    """median (min–max) of an aggregate; a plain value as it is."""
    if isinstance(value, dict) and "median" in value:
        mid, lo, hi = value["median"], value["min"], value["max"]
        if lo == hi:
            return _num(mid)
        return f"{_num(mid)} ({_num(lo)}–{_num(hi)})"
    if value is None:
        return "–"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return _num(value) if isinstance(value, int | float) else str(value)


def _num(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"


@dataclass(frozen=True)
class Row:
    """One line of the issue's table."""

    title: str
    scenario: str
    keys: tuple[str, ...]
    target: str
    met: Callable[[dict], bool | None]


def _m(scenario: str, key: str, target: str = "emergence"):
    return lambda r: median(r, scenario, target, key)


def _all_le(*pairs) -> Callable[[dict], bool | None]:
    def check(result: dict) -> bool | None:
        values = [(get(result), limit) for get, limit in pairs]
        if any(
            v is None or (isinstance(v, float) and math.isnan(v)) for v, _ in values
        ):
            return None
        return all(v <= limit for v, limit in values)

    return check


def _rtt_met(result: dict) -> bool | None:
    ours = median(result, "round_trip", "emergence", "p99_ms")
    echo = median(result, "round_trip", "channels-echo", "p99_ms")
    if ours is None or echo is None:
        return None
    return ours <= 25 and ours <= 1.5 * echo


def _idle_met(result: dict) -> bool | None:
    sockets = median(result, "idle_rss", "emergence", "sockets")
    per = median(result, "idle_rss", "emergence", "kib_per_socket")
    if sockets is None or per is None:
        return None
    return sockets >= 10_000 and per <= 48


ROWS = (
    Row(
        "Idle sockets on one process: sockets, RSS per socket (KiB)",
        "idle_rss",
        ("sockets", "kib_per_socket"),
        "10,000 sockets, ≤ 48 KiB",
        _idle_met,
    ),
    Row(
        "Connect + session load at 200/s: p50 / p99 (ms)",
        "connect_latency",
        ("p50_ms", "p99_ms"),
        "p99 ≤ 50 ms",
        _all_le((_m("connect_latency", "p99_ms"), 50)),
    ),
    Row(
        "Round trip across two instances at 500 msg/s: p50 / p99 (ms)",
        "round_trip",
        ("p50_ms", "p99_ms"),
        "p99 ≤ 25 ms and ≤ 1.5× Channels echo",
        _rtt_met,
    ),
    Row(
        "Fan-out to 1,000 sockets: last receiver (ms)",
        "fanout",
        ("last_receiver_ms",),
        "≤ 200 ms",
        _all_le((_m("fanout", "last_receiver_ms"), 200)),
    ),
    Row(
        "Reconnect storm, 2,000 dropped: all back (s) / failed (not overloaded)",
        "reconnect_storm",
        ("all_back_s", "failed_attempts"),
        "≤ 10 s, 0 failures",
        _all_le(
            (_m("reconnect_storm", "all_back_s"), 10),
            (_m("reconnect_storm", "failed_attempts"), 0),
        ),
    ),
    Row(
        "PostgreSQL restart: DB back → first connect (s)",
        "pg_restart",
        ("recovery_s",),
        "≤ 2 s",
        _all_le((_m("pg_restart", "recovery_s"), 2)),
    ),
    Row(
        "Liveness during a 1,000-socket disconnect storm: p99 (ms)",
        "liveness_storm",
        ("p99_ms",),
        "≤ 20 ms",
        _all_le((_m("liveness_storm", "p99_ms"), 20)),
    ),
    Row(
        "Static page load (cold): requests / bytes",
        "page_load",
        ("cold_requests", "cold_bytes"),
        "≤ 5 requests",
        _all_le((_m("page_load", "cold_requests"), 5)),
    ),
)


def _cell(result: dict, scenario: str, target: str, keys: tuple[str, ...]) -> str:
    figures = result["figures"].get(scenario, {}).get(target)
    if not figures:
        return "–"
    if "error" in figures:
        return "failed"
    return " / ".join(fmt(figures.get(k)) for k in keys)


@dataclass(frozen=True)
class Versus:
    """A figure shown for every target with its ratio to the echo's, run by run."""

    title: str
    scenario: str
    key: str
    unit: str = ""
    note: str = ""  # a text figure said after the value (e.g. why a search stopped)


VERSUS = (
    Versus("Connect storm: wall time", "connect_storm", "wall_s", " s"),
    Versus(
        "Connect storm: first frame p50", "connect_storm", "first_frame_p50_ms", " ms"
    ),
    Versus(
        "Connect storm: first frame p99", "connect_storm", "first_frame_p99_ms", " ms"
    ),
    Versus("Connect storm: failed (not overloaded)", "connect_storm", "failures"),
    Versus("Connect storm: refused `overloaded`", "connect_storm", "overloaded"),
    Versus(
        "Highest rate held, stopped by",
        "max_rate",
        "max_rate_per_s",
        " msg/s",
        "stopped_by",
    ),
    Versus("Reconnect storm: all back", "reconnect_storm", "all_back_s", " s"),
    Versus(
        "Reconnect storm: failed (not overloaded)",
        "reconnect_storm",
        "failed_attempts",
    ),
    Versus(
        "Reconnect storm: refused `overloaded`",
        "reconnect_storm",
        "overloaded",
    ),
    Versus("Fast-retry storm: all back", "retry_storm", "all_back_s", " s"),
    Versus("Fast-retry storm: not back at the bound", "retry_storm", "not_back"),
    Versus("Fast-retry storm: attempts", "retry_storm", "attempts"),
    Versus("Fast-retry storm: refused `overloaded`", "retry_storm", "overloaded"),
    Versus("Fast-retry storm: other failed attempts", "retry_storm", "other_failures"),
    Versus("Fast-retry storm: liveness p99", "retry_storm", "liveness_p99_ms", " ms"),
)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def echo_ratio(
    result: dict, scenario: str, target: str, key: str, base: str = BASELINE
) -> float | None:
    """Median over runs of a target's figure over the echo's in that same run."""
    ratios = []
    for run in result.get("raw") or []:
        mine, echo = (run.get(t, {}).get(scenario) for t in (target, base))
        if not isinstance(mine, dict) or not isinstance(echo, dict):
            continue
        num, den = _finite(mine.get(key)), _finite(echo.get(key))
        if num is not None and den:
            ratios.append(num / den)
    return statistics.median(ratios) if ratios else None


def times(ratio: float) -> str:
    """A ratio as it reads best: 12×, 2.1×, 0.45×."""
    if ratio == 0:
        return "0×"
    if ratio >= 10:
        return f"{ratio:,.0f}×"
    return f"{ratio:.1f}×" if ratio >= 1 else f"{ratio:.2f}×"


def versus_cell(result: dict, row: Versus, target: str) -> str:
    """`9.8 s (2.1× echo)`: the median, and the median ratio to the echo."""
    figures = result["figures"].get(row.scenario, {}).get(target)
    if not figures:
        return "–"
    if "error" in figures:
        return "failed"
    value = median(result, row.scenario, target, row.key)
    if value is None:
        return "–"
    text = _num(value) + ("" if math.isnan(value) else row.unit)
    if row.note and isinstance(figures.get(row.note), str):
        text += f", {figures[row.note]}"
    if target == BASELINE:
        return text
    ratio = echo_ratio(result, row.scenario, target, row.key)
    return text if ratio is None else f"{text} ({times(ratio)} echo)"


def versus_section(result: dict) -> list[str]:
    """The storm and capacity figures of every target, each against the echo's."""
    rows = [row for row in VERSUS if row.scenario in result["figures"]]
    if not rows:
        return []
    # Sizes of an older results file default to the full run's.
    z = {**asdict(storms.FULL), **result.get("sizes", {})}
    steps = ", ".join(f"{rate:,}" for rate in z["rate_steps"])
    lines = [
        "## Storms and capacity, against the bare Channels echo",
        "",
        "Each cell: the median over runs; in brackets, the median over runs of its "
        "ratio to the bare Channels echo's figure in the same run.",
        f"Connect storm: {z['connect_storm_sockets']:,} sockets opened "
        f"{z['connect_storm_concurrency']} at a time on one instance and kept open; "
        "first frame: from the attempt to the first frame the server sent "
        "(Emergence: `ws:session_established`; the echo servers send none on open, "
        "so theirs is the handshake). "
        f"Highest rate held: steps of {steps} msg/s over "
        f"{z['rate_pairs']} pairs on two instances (half A→B, half B→A), "
        f"{z['rate_step_seconds']} s each, until a step's p99 is over "
        f"{z['rate_p99_ms']:g} ms (stopped by `p99`), a message is lost (`lost`) or "
        "the load generator falls behind (`generator`); `ceiling`: every step held. "
        f"Fast-retry storm: {z['retry_sockets']:,} sockets on one instance "
        "aborted at once, each client retrying at once and then every 0.2–1 s with "
        "no backoff (an `overloaded` error frame's `retry_after_ms` honoured), "
        f"bounded at {z['retry_bound_seconds']:g} s, in the first "
        f"{min(z['retry_runs'], result.get('runs', 1))} run(s); liveness probed from "
        "the drop until all are back.",
        "",
        "| figure | " + " | ".join(t for _, t in COLUMNS) + " |",
        "| --- | " + " | ".join("---" for _ in COLUMNS) + " |",
    ]
    for row in rows:
        cells = [versus_cell(result, row, key) for key, _ in COLUMNS]
        lines.append(f"| {row.title} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def markdown(result: dict) -> str:
    """The whole RESULTS.md."""
    m, v, sizes = result["machine"], result["versions"], result["sizes"]
    lines = [
        "# Emergence benchmark results",
        "",
        f"Written by `make bench` (`python -m bench.run`, mode {result['mode']}) on "
        f"{result['when']}; {result['runs']} run(s), {result['duration_s']:.0f} s in "
        "all. Every figure is the median of the runs, with min–max in brackets.",
        "Baselines ran in the same invocation, interleaved run by run.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux "
        f"{m['kernel']}; the load generator shares the box with the servers.",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "Settings: DEBUG off, JSON logs at INFO (access log on), psycopg pool, "
        "channels_redis PubSub layer unless a label says core, Daphne flags of "
        "`make run`; sizes " + ", ".join(f"{k}={val}" for k, val in sizes.items()),
        "",
        "## The issue's figures",
        "",
        "| figure | target | " + " | ".join(t for _, t in COLUMNS) + " | verdict |",
        "| --- | --- | " + " | ".join("---" for _ in COLUMNS) + " | --- |",
    ]
    for row in ROWS:
        cells = [_cell(result, row.scenario, key, row.keys) for key, _ in COLUMNS]
        met = row.met(result)
        verdict = {True: "met", False: "**missed**", None: "not measured"}[met]
        lines.append(
            f"| {row.title} | {row.target} | " + " | ".join(cells) + f" | {verdict} |"
        )
    lines += ["", *versus_section(result), "## Every figure", ""]
    lines += every_figure(result)
    return "\n".join(lines) + "\n"


def every_figure(result: dict) -> list[str]:
    """One table per scenario: every figure of every target (rate steps apart)."""
    lines: list[str] = []
    for scenario, by_target in result["figures"].items():
        keys: list[str] = []
        for figures in by_target.values():
            keys += [k for k in figures if k not in keys and not STEP_KEY.match(k)]
        lines += [
            f"### {SCENARIO_TITLES.get(scenario, scenario)} (`{scenario}`)",
            "",
            "| target | " + " | ".join(keys) + " |",
            "| --- | " + " | ".join("---" for _ in keys) + " |",
        ]
        for target, figures in by_target.items():
            lines.append(
                f"| {target} | " + " | ".join(fmt(figures.get(k)) for k in keys) + " |"
            )
        lines += ["", *steps_table(by_target)]
    return lines


def steps_table(by_target: dict) -> list[str]:
    """Each rate step a target ran: what was sent, its latencies and losses."""
    rows = []
    for target, figures in by_target.items():
        rates = {int(m.group(1)) for k in figures if (m := STEP_KEY.match(k))}
        for rate in sorted(rates):
            cells = [fmt(figures.get(f"at{rate}_{k}")) for k in STEP_FIELDS]
            rows.append(f"| {target} | {rate:,} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return [
        "| target | offered msg/s | " + " | ".join(STEP_FIELDS) + " |",
        "| --- | --- | " + " | ".join("---" for _ in STEP_FIELDS) + " |",
        *rows,
        "",
    ]


def broken(result: dict) -> list[str]:
    """What makes a run fail: crashes and lost work, never a missed speed target."""
    out = []
    for scenario, by_target in result["figures"].items():
        for target, figures in by_target.items():
            if "error" in figures:
                out.append(f"{scenario} on {target}: {figures['error']}")
            for key in ("lost", "missing", "never_back", "gave_up"):
                if (median(result, scenario, target, key) or 0) > 0:
                    out.append(f"{scenario} on {target}: {key} > 0")
            if scenario == "error_records" and (figures.get("value") or {}).get(
                "max", 0
            ):
                out.append(f"{target}: ERROR records in the server logs")
    return out
