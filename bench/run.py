"""`make bench`: every figure for Emergence and its baselines, one run.

    python -m bench.run            # full sizes, 3 runs (fast-retry storm 2), ~50 min
    python -m bench.run --quick    # CI smoke: small sizes, 1 run (~3 min)

Starts what it measures (Daphne/Uvicorn/echo servers over PostgreSQL + Redis on
loopback), stops it, and writes bench/results/<mode>.json and, for a full run,
bench/RESULTS.md. Baselines run in the same invocation, interleaved run by run, so
that ratios hold on a noisy machine. Exits 1 only when a scenario broke (crash,
lost messages, failed connects in the quick run), not when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import capacity, page, report, scenarios, storms
from bench.harness import ROOT, Cluster, machine, prepare_database, versions

logger = logging.getLogger("bench")
RESULTS = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Target:
    """One thing measured: a server kind and its channel layer."""

    label: str
    kind: str
    layer: str = "pubsub"
    instances: int = 2
    scenarios: tuple[str, ...] = (
        "idle_rss",
        "connect_latency",
        "round_trip",
        "fanout",
        "reconnect_storm",
        "liveness_storm",
        "connect_storm",
        "max_rate",
        "retry_storm",
    )


TARGETS = (
    Target("emergence", "emergence"),
    Target("emergence-core", "emergence", "core", scenarios=("round_trip", "fanout")),
    Target("uvicorn", "uvicorn"),
    Target("channels-echo", "channels-echo"),
    Target(
        "channels-echo-core",
        "channels-echo",
        "core",
        scenarios=("round_trip", "fanout"),
    ),
    Target("websockets-echo", "websockets-echo", instances=1),
)


def run_target(
    target: Target,
    sizes: storms.StormSizes,
    log_dir: Path,
    quick: bool = False,
    run_no: int = 0,
) -> dict:
    """One run of every scenario of a target; scenario name -> figures or error."""
    out: dict[str, Any] = {}
    extra = {"WS_CLEANUP_GRACE_SECONDS": str(sizes.grace_seconds)}
    names = scenario_names(target, sizes, run_no)
    if "idle_rss" in names and not quick:
        # A fresh process of its own, so nothing else has grown its heap (a quick
        # run measures it first thing on the shared cluster instead).
        names.remove("idle_rss")
        cluster = Cluster(target.kind, 1, layer=target.layer, log_dir=log_dir, **extra)
        with cluster:
            out["idle_rss"] = _run(scenarios.idle_rss, cluster, sizes)
            # Skip a drain of thousands of sockets: the figure is taken.
            cluster.servers[0].kill()
    if names:
        cluster = Cluster(
            target.kind,
            target.instances,
            layer=target.layer,
            log_dir=log_dir,
            **extra,
        )
        with cluster:
            for name in names:
                out[name] = _run(scenario_function(name), cluster, sizes)
                # Let disconnect cleanups (grace timers) finish before the next one.
                time.sleep(sizes.grace_seconds + 0.5 if cluster.emergence else 0.2)
            errors = cluster.error_records()
            out["error_records"] = len(errors)
            out["error_events"] = sorted({str(r.get("event")) for r in errors})
    return out


# Scenarios kept out of bench/scenarios.py (its size), by name.
ELSEWHERE = {
    "connect_storm": storms.connect_storm,
    "max_rate": capacity.max_rate,
    "retry_storm": storms.retry_storm,
}


def scenario_function(name: str):
    """The async function that measures a scenario, wherever it lives."""
    return ELSEWHERE.get(name) or getattr(scenarios, name)


def scenario_names(target: Target, sizes: storms.StormSizes, run_no: int) -> list:
    """The scenarios of a target in run `run_no` (0-based)."""
    names = list(target.scenarios)
    if run_no >= sizes.retry_runs and "retry_storm" in names:
        # The longest figure: fewer runs keep `make bench` within the hour.
        names.remove("retry_storm")
    return names


def _run(scenario, cluster: Cluster, sizes: scenarios.Sizes) -> dict:
    began = time.monotonic()
    try:
        figures = asyncio.run(scenario(cluster, sizes))
    except Exception as exc:  # a broken scenario is reported, the others still run
        logger.exception("%s on %s failed", scenario.__name__, cluster.kind)
        return {"error": f"{type(exc).__name__}: {exc}"}
    figures["seconds"] = round(time.monotonic() - began, 1)
    logger.info("%s %s: %s", cluster.kind, scenario.__name__, figures)
    return figures


def run_database(sizes: scenarios.Sizes, log_dir: Path) -> dict:
    """Recovery after a PostgreSQL restart (Emergence only: baselines have no DB)."""
    from bench.infra import PrivatePostgres

    try:
        with PrivatePostgres() as pg:
            prepare_database(pg.base)
            cluster = Cluster("emergence", 1, log_dir=log_dir, pg=pg.base)
            with cluster:
                return _run_pg(cluster, pg, sizes)
    except Exception as exc:  # reported in the table; the other figures stand
        logger.exception("pg_restart setup failed")
        return {"error": f"{type(exc).__name__}: {exc}"}


def _run_pg(cluster: Cluster, pg, sizes: scenarios.Sizes) -> dict:
    began = time.monotonic()
    try:
        figures = asyncio.run(scenarios.pg_restart(cluster, pg, sizes))
    except Exception as exc:
        logger.exception("pg_restart failed")
        return {"error": f"{type(exc).__name__}: {exc}"}
    figures["seconds"] = round(time.monotonic() - began, 1)
    return figures


def aggregate(values: list[Any]) -> Any:
    """Median, min and max of a figure over runs (non-numbers kept as they are)."""
    numbers = [
        v
        for v in values
        if isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v)
    ]
    if not numbers:
        return values[-1] if values else None
    return {
        "median": round(statistics.median(numbers), 2),
        "min": round(min(numbers), 2),
        "max": round(max(numbers), 2),
        "runs": len(numbers),
    }


def merge(runs: list[dict]) -> dict:
    """scenario -> target -> figure -> aggregate, over every run."""
    merged: dict[str, dict[str, dict[str, Any]]] = {}
    for run in runs:
        for target, by_scenario in run.items():
            for scenario, figures in by_scenario.items():
                if not isinstance(figures, dict):
                    figures = {"value": figures}
                slot = merged.setdefault(scenario, {}).setdefault(target, {})
                for key, value in figures.items():
                    slot.setdefault(key, []).append(value)
    return {
        scenario: {
            target: {key: aggregate(vals) for key, vals in figures.items()}
            for target, figures in by_target.items()
        }
        for scenario, by_target in merged.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="CI smoke: small sizes, one run"
    )
    parser.add_argument("--runs", type=int, help="runs per figure (default 3, quick 1)")
    parser.add_argument(
        "--only", default="", help="comma-separated target labels (default: all)"
    )
    parser.add_argument(
        "--out", type=Path, help="results directory (default bench/results)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    sizes = storms.QUICK if args.quick else storms.FULL
    runs = max(1, min(args.runs or (1 if args.quick else 3), 10))
    wanted = set(filter(None, args.only.split(",")))
    targets = [t for t in TARGETS if not wanted or t.label in wanted]
    if args.quick:
        # Smoke: the core-layer variants add nothing a smoke run needs.
        targets = [t for t in targets if t.layer == "pubsub"]
    out_dir = args.out or RESULTS
    log_dir = Path(tempfile.mkdtemp(prefix="emergence-bench-logs-"))
    began = time.time()
    prepare_database()
    all_runs: list[dict] = []
    for run_no in range(runs):
        logger.info("run %d of %d", run_no + 1, runs)
        run: dict[str, dict] = {}
        for target in targets:
            run[target.label] = run_target(target, sizes, log_dir, args.quick, run_no)
        if not wanted or "emergence" in wanted:
            run.setdefault("emergence", {})["pg_restart"] = run_database(sizes, log_dir)
            if page.available():
                run["emergence"]["page_load"] = _page(log_dir)
        all_runs.append(run)
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(began)),
        "mode": "quick" if args.quick else "full",
        "duration_s": round(time.time() - began, 1),
        "machine": machine(),
        "versions": versions(),
        "sizes": sizes.__dict__,
        "runs": runs,
        "targets": [t.__dict__ for t in targets],
        "figures": merge(all_runs),
        "raw": all_runs,
        "logs": str(log_dir),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "quick" if args.quick else "latest"
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = report.markdown(result)
    if not args.quick and not wanted:
        (ROOT / "bench" / "RESULTS.md").write_text(table)
    print(table)
    broken = report.broken(result)
    for line in broken:
        print(f"BROKEN: {line}", file=sys.stderr)
    return 1 if broken else 0


def _page(log_dir: Path) -> dict:
    static_root = page.collect_static()
    cluster = Cluster("emergence", 1, log_dir=log_dir, STATIC_ROOT=str(static_root))
    try:
        with cluster:
            return page.page_load(cluster.servers[0])
    except Exception as exc:
        logger.exception("page load failed")
        return {"error": f"{type(exc).__name__}: {exc}"}


if __name__ == "__main__":
    sys.exit(main())
