"""`make bench`'s quick form in CI: every figure measured for every target.

The figures themselves are not asserted (speed targets live in the benchmark's
table, never in tests); what must hold is that every scenario ran, lost nothing and
left no ERROR record in the servers' logs, and the storms' guarantees (no failed
connect at 20 at a time, no client refused for good, all back unless bounded out).
"""

import json
import os
import subprocess
import sys

import pytest
from django.db import connection

from bench.run import Target
from bench.servers import ROOT, clean_environ
from tests.e2e.wsclient import append_figure

pytestmark = pytest.mark.e2e

SCENARIOS = Target("emergence", "emergence").scenarios
TARGETS = ("emergence", "uvicorn", "channels-echo", "websockets-echo")


def bench_env() -> dict[str, str]:
    """The bench on the test run's PostgreSQL server and Redis, in its own database."""
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    env = clean_environ()
    env.update(
        BENCH_PG=f"postgres://{db.get('USER') or 'postgres'}{password}@"
        f"{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}",
        BENCH_DB=f"{db['NAME']}_bench",
        BENCH_REDIS_URL=os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    )
    return env


@pytest.mark.timeout(600)
def test_quick_bench_measures_every_figure(tmp_path, transactional_db):
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        env=bench_env(),
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    result = json.loads((tmp_path / "quick.json").read_text())
    figures = result["figures"]
    for scenario in SCENARIOS:
        for target in TARGETS:
            measured = figures[scenario][target]
            assert "error" not in measured, (scenario, target, measured)
    for target in TARGETS:
        assert figures["error_records"][target]["value"]["max"] == 0, target
        check_storms(figures, target)
    assert figures["pg_restart"]["emergence"]["recovery_s"]["median"] >= 0
    assert figures["round_trip"]["emergence"]["lost"]["max"] == 0
    emergence = {s: figures[s]["emergence"] for s in SCENARIOS}
    append_figure(
        f"bench quick ({result['duration_s']:.0f} s): connect p99 "
        f"{emergence['connect_latency']['p99_ms']['median']} ms, round trip p99 "
        f"{emergence['round_trip']['p99_ms']['median']} ms, fan-out "
        f"{emergence['fanout']['sockets']['median']} sockets last "
        f"{emergence['fanout']['last_receiver_ms']['median']} ms, liveness p99 in a "
        f"storm {emergence['liveness_storm']['p99_ms']['median']} ms, PG recovery "
        f"{figures['pg_restart']['emergence']['recovery_s']['median']} s, connect "
        f"storm {median(emergence['connect_storm'], 'wall_s')} s, highest rate "
        f"{median(emergence['max_rate'], 'max_rate_per_s')} msg/s, fast-retry "
        f"storm all back {median(emergence['retry_storm'], 'all_back_s')} s"
    )


def median(figures: dict, key: str):
    """A figure's median over runs, None when no run measured a number."""
    value = figures.get(key)
    return value.get("median") if isinstance(value, dict) else None


def check_storms(figures: dict, target: str) -> None:
    """The storms' guarantees; their speeds are figures, never asserted."""
    storm = figures["connect_storm"][target]
    # 20 at a time is well within any server's means: every socket opens (a refusal
    # by admission control is a figure of its own).
    assert storm["failures"]["max"] == 0, (target, storm)
    assert median(storm, "first_frame_p99_ms") is not None, (target, storm)
    search = figures["max_rate"][target]
    assert search["steps"]["median"] >= 1, (target, search)
    assert median(search, "max_rate_per_s") is not None, (target, search)
    # Nothing lost at any step whose p99 met the target.
    assert search["lost"]["max"] == 0, (target, search)
    retry = figures["retry_storm"][target]
    assert retry["gave_up"]["max"] == 0, (target, retry)
    assert retry["attempts"]["median"] >= retry["clients"]["median"], (target, retry)
    assert retry["probes"]["median"] > 0, (target, retry)
    if retry["not_back"]["max"] == 0:
        # Not bounded out: every client is back, and the time says when.
        assert retry["back"]["median"] == retry["clients"]["median"], (target, retry)
        assert median(retry, "all_back_s") is not None, (target, retry)
