"""The benchmark's arithmetic and its table: medians, percentiles, verdicts."""

import math

from bench import report
from bench.run import aggregate, merge
from bench.scenarios import percentile


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_aggregate_takes_median_min_max_and_skips_nan():
    assert aggregate([3.0, 1.0, 2.0, float("nan")]) == {
        "median": 2.0,
        "min": 1.0,
        "max": 3.0,
        "runs": 3,
    }
    assert aggregate(["x", "y"]) == "y"


def result_with(**emergence) -> dict:
    runs = [
        {
            "emergence": {
                scenario: dict(figures) for scenario, figures in emergence.items()
            },
            "channels-echo": {"round_trip": {"p50_ms": 2.0, "p99_ms": 10.0}},
        }
    ]
    return {
        "figures": merge(runs),
        "machine": {"cpu": "x", "cores": 2, "memory_gib": 24, "kernel": "6"},
        "versions": {"python": "3.11"},
        "sizes": {},
        "mode": "full",
        "when": "now",
        "runs": 1,
        "duration_s": 1.0,
    }


def test_verdicts_follow_the_issue_targets():
    result = result_with(
        round_trip={"p50_ms": 5.0, "p99_ms": 16.0, "lost": 0},
        fanout={"last_receiver_ms": 250.0, "missing": 0},
    )
    table = report.markdown(result)
    rtt = next(line for line in table.splitlines() if line.startswith("| Round"))
    fan = next(line for line in table.splitlines() if line.startswith("| Fan-out"))
    # 16 ms <= 25 ms but more than 1.5 x the echo's 10 ms.
    assert rtt.endswith("| **missed** |")
    assert fan.endswith("| **missed** |")
    assert "| 5 / 16 |" in rtt
    idle = next(line for line in table.splitlines() if line.startswith("| Idle"))
    assert idle.endswith("| not measured |")


def test_lost_messages_and_errors_break_the_run_but_slowness_does_not():
    slow = result_with(fanout={"last_receiver_ms": 900.0, "missing": 0})
    assert report.broken(slow) == []
    lossy = result_with(round_trip={"p99_ms": 1.0, "lost": 3})
    assert report.broken(lossy) == ["round_trip on emergence: lost > 0"]
    crashed = result_with(fanout={"error": "RuntimeError: boom"})
    assert report.broken(crashed) == ["fanout on emergence: RuntimeError: boom"]
