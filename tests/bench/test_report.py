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


def two_runs(scenario: str, key: str, ours: list, echo: list) -> dict:
    runs = [
        {
            "emergence": {scenario: {key: mine}},
            "channels-echo": {scenario: {key: theirs}},
        }
        for mine, theirs in zip(ours, echo, strict=True)
    ]
    result = result_with()
    result.update(figures=merge(runs), raw=runs, runs=len(runs))
    return result


def test_ratio_to_the_echo_is_taken_run_by_run_then_the_median():
    result = two_runs("connect_storm", "wall_s", [10.0, 30.0, 20.0], [5.0, 10.0, 2.0])
    # Per run 2×, 3×, 10×: the median is 3×, not 20 / 5 = 4×.
    assert report.echo_ratio(result, "connect_storm", "emergence", "wall_s") == 3.0
    row = next(r for r in report.VERSUS if r.key == "wall_s")
    assert report.versus_cell(result, row, "emergence") == "20 s (3.0× echo)"
    assert report.versus_cell(result, row, "channels-echo") == "5 s"
    assert report.versus_cell(result, row, "uvicorn") == "–"


def test_ratio_skips_runs_without_a_usable_echo_figure():
    result = two_runs("retry_storm", "all_back_s", [8.0, float("nan")], [0.0, 2.0])
    assert report.echo_ratio(result, "retry_storm", "emergence", "all_back_s") is None
    result = two_runs("retry_storm", "overloaded", [4, 6], [0, 0])
    row = next(
        r for r in report.VERSUS if (r.scenario, r.key) == ("retry_storm", "overloaded")
    )
    assert report.versus_cell(result, row, "emergence") == "5"
    assert [report.times(r) for r in (12.3, 2.14, 0.456, 0)] == [
        "12×",
        "2.1×",
        "0.46×",
        "0×",
    ]


def test_the_storm_section_and_the_rate_steps_table():
    result = two_runs("max_rate", "max_rate_per_s", [400], [1600])
    raw = result["raw"][0]
    raw["emergence"]["max_rate"].update(
        at200_p99_ms=9.0, at200_lost=0, stopped_by="p99"
    )
    raw["channels-echo"]["max_rate"]["stopped_by"] = "ceiling"
    result["figures"] = merge(result["raw"])
    table = report.markdown(result)
    held = next(line for line in table.splitlines() if line.startswith("| Highest"))
    assert "| 400 msg/s, p99 (0.25× echo) |" in held
    assert "| 1,600 msg/s, ceiling |" in held
    assert "| emergence | 200 | – | – | 9 | 0 |" in table
    # Step figures are in their own table, not columns of the scenario's.
    assert "at200_p99_ms" not in table


def test_a_lost_step_past_overload_or_a_storm_bounded_out_does_not_break_the_run():
    overloaded = result_with(max_rate={"lost": 0, "at800_lost": 40})
    assert report.broken(overloaded) == []
    bounded = result_with(retry_storm={"not_back": 12, "gave_up": 0})
    assert report.broken(bounded) == []
    refused = result_with(retry_storm={"not_back": 0, "gave_up": 1})
    assert report.broken(refused) == ["retry_storm on emergence: gave_up > 0"]
