"""The storms' and the rate search's arithmetic: verdicts, tallies, windows."""

import math
import random
from collections import Counter

from websockets.exceptions import ConnectionClosed
from websockets.frames import Close

from bench.capacity import frame_id, rate_figures, step_verdict
from bench.load import ConnectError, overloaded_wait
from bench.run import TARGETS, scenario_names
from bench.storms import (
    FULL,
    QUICK,
    connect_storm_figures,
    liveness_figures,
    refusal,
    retry_delay,
    storm_figures,
)


def step(rate, p99, lost=0, sent_per_s=None, p50=1.0):
    return {
        "rate": rate,
        "sent_per_s": rate if sent_per_s is None else sent_per_s,
        "p50_ms": p50,
        "p99_ms": p99,
        "lost": lost,
    }


def test_a_step_holds_only_within_p99_with_nothing_lost_at_the_offered_pace():
    assert step_verdict(step(200, 100.0), 100) is None
    assert step_verdict(step(200, 100.1), 100) == "p99"
    assert step_verdict(step(200, 20.0, lost=1), 100) == "lost"
    # Nothing arrived at all: a loss, not a slow step.
    assert step_verdict(step(200, math.nan, lost=600), 100) == "lost"
    assert step_verdict(step(200, 20.0, sent_per_s=170), 100) == "generator"
    assert step_verdict(step(200, 20.0, sent_per_s=180), 100) is None


def test_the_search_reports_the_last_step_held_and_why_it_stopped():
    figures = rate_figures(
        [step(200, 10.0), step(400, 40.0), step(800, 450.0, lost=7)], 100
    )
    assert figures["max_rate_per_s"] == 400
    assert (figures["stopped_at_per_s"], figures["stopped_by"]) == (800, "p99")
    assert figures["steps"] == 3
    # Losses past the point of overload are the step's figure, not a broken run.
    assert figures["lost"] == 0
    assert figures["at800_lost"] == 7 and figures["at400_p99_ms"] == 40.0
    assert "at800_rate" not in figures


def test_a_loss_at_a_step_within_p99_is_counted_and_stops_the_search():
    figures = rate_figures([step(100, 5.0), step(200, 9.0, lost=2)], 100)
    assert figures["max_rate_per_s"] == 100
    assert figures["stopped_by"] == "lost"
    assert figures["lost"] == 2


def test_every_step_held_is_the_ceiling_and_none_held_is_zero():
    held = rate_figures([step(100, 5.0), step(200, 6.0)], 100)
    assert held["max_rate_per_s"] == 200 and held["stopped_by"] == "ceiling"
    assert math.isnan(held["stopped_at_per_s"])
    missed = rate_figures([step(100, 500.0)], 100)
    assert missed["max_rate_per_s"] == 0 and missed["stopped_by"] == "p99"


def test_frame_id_reads_compact_and_spaced_json_and_only_our_prefix():
    assert frame_id('{"type":"chat.message","id":"m0-001-000002","seq":3}', "m") == (
        "m0-001-000002"
    )
    assert frame_id('{"type": "chat.message", "id": "m1-2", "text": "x"}', "m") == (
        "m1-2"
    )
    assert frame_id('{"session_id":"m-1","id":"r0000-00001"}', "m") is None


def test_overloaded_frame_is_honoured_and_other_failures_retry_soon():
    rng = random.Random(1)
    overloaded = ConnectError.from_frame(
        {"type": "error", "code": "overloaded", "retry_after_ms": 2500}
    )
    assert (overloaded.code, overloaded.retry_after_ms) == ("overloaded", 2500)
    assert refusal(overloaded) == "overloaded"
    assert retry_delay(overloaded, rng) == 2.5
    for bad in (None, -1, "3", True, math.inf):
        frame = {"type": "error", "code": "overloaded", "retry_after_ms": bad}
        assert ConnectError.from_frame(frame).retry_after_ms is None
    other = ConnectError.from_frame({"type": "error", "code": "db_unavailable"})
    assert refusal(other) == "other"
    delays = [retry_delay(other, rng) for _ in range(200)]
    assert all(0.2 <= d <= 1.0 for d in delays)
    assert refusal(TimeoutError()) == "timeout"
    assert refusal(OSError()) == "other"


def test_a_44xx_close_is_fatal_and_a_1013_is_not():
    assert refusal(ConnectionClosed(Close(4403, "forbidden"), None)) == "fatal"
    assert refusal(ConnectionClosed(Close(1013, "later"), None)) == "other"
    assert refusal(ConnectionClosed(None, None)) == "other"


def test_storm_figures_tell_bounded_out_from_given_up():
    tally = Counter(attempts=9, overloaded=3, timeout=1, other=2)
    figures = storm_figures([0.5, 2.0, 1.0], tally, 90.0)
    assert figures["all_back_s"] == 2.0
    assert (figures["back"], figures["not_back"], figures["gave_up"]) == (3, 0, 0)
    assert (figures["overloaded"], figures["other_failures"]) == (3, 3)
    bounded = storm_figures([0.5, None, None], Counter(attempts=40, fatal=1), 90.0)
    assert math.isnan(bounded["all_back_s"])
    assert (bounded["back"], bounded["not_back"], bounded["gave_up"]) == (1, 1, 1)
    assert bounded["p50_back_s"] == 0.5


def test_liveness_is_taken_from_the_drop_to_the_end_only():
    samples = [[9.0, 1.0], [10.0, 50.0], [10.5, None], [11.0, 3.0], [12.5, 99.0]]
    figures = liveness_figures(samples, 10.0, 12.0)
    assert figures["probes"] == 3 and figures["probe_failures"] == 1
    assert figures["liveness_p99_ms"] == 50.0 and figures["liveness_p50_ms"] == 3.0
    assert figures["calm_p99_ms"] == 1.0


def test_connect_storm_figures_split_overloaded_from_failures():
    timings = [(0.001, 0.002, 0.003)] * 98 + [(0.010, 0.050, 0.060)] * 2
    tally = Counter(overloaded=2, timeout=1)
    figures = connect_storm_figures(103, 2.0, timings, tally)
    assert (figures["opened"], figures["failures"], figures["overloaded"]) == (
        100,
        1,
        2,
    )
    assert figures["connects_per_s"] == 50.0
    assert figures["first_frame_p50_ms"] == 2.0
    assert figures["first_frame_p99_ms"] == 50.0


def test_quick_sizes_stay_small():
    assert QUICK.connect_storm_sockets == QUICK.retry_sockets == 200
    assert QUICK.rate_steps == (100, 200, 400)
    assert QUICK.idle_sockets == 300  # the scenarios' quick sizes carried over


def test_the_fast_retry_storm_runs_in_the_first_runs_only():
    emergence = next(t for t in TARGETS if t.label == "emergence")
    assert FULL.retry_runs == 2
    assert "retry_storm" in scenario_names(emergence, FULL, 1)
    assert "retry_storm" not in scenario_names(emergence, FULL, 2)
    assert scenario_names(emergence, FULL, 2)[-2:] == ["connect_storm", "max_rate"]
    core = next(t for t in TARGETS if t.label == "emergence-core")
    assert scenario_names(core, FULL, 2) == ["round_trip", "fanout"]


def test_an_overloaded_refusal_says_how_long_to_wait_and_nothing_else_does():
    said = ConnectError.from_frame(
        {"type": "error", "code": "overloaded", "retry_after_ms": 2400}
    )
    unsaid = ConnectError.from_frame({"type": "error", "code": "overloaded"})
    assert overloaded_wait(said) == 2.4
    assert overloaded_wait(unsaid) == 0.5
    assert overloaded_wait(ConnectError.from_frame({"type": "presence"})) is None
    assert overloaded_wait(ConnectError("x", "db_unavailable")) is None
    assert overloaded_wait(TimeoutError()) is None
