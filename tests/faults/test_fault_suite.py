"""The fault suite in its quick (CI) form, run as `python -m bench.faults`.

It breaks its own private PostgreSQL and Redis (bench/infra.py) and its own Daphne
processes for real; the machine's shared servers are never stopped. The invariants
are checked here again from its JSON report so that a failure names the scenario.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.e2e.wsclient import append_figure
from tests.servers import ROOT

pytestmark = pytest.mark.faults

TIMEOUT_S = 240
SCENARIOS = {"pg_terminate", "pg_stop", "redis_restart", "kill9", "abort_storm"}


def _environment() -> dict[str, str]:
    """This environment minus the test runner's: bench.faults sets its own."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "PYTEST_", "TEST_"))
    }


def _summary(report: dict) -> str:
    parts = []
    for s in report["scenarios"]:
        recover = "-" if s["recover_s"] is None else f"{s['recover_s']}s"
        parts.append(
            f"{s['name']} {'ok' if s['passed'] else 'FAIL'} "
            f"sent {s['sent']} delivered {s['delivered']} dup {s['duplicates']} "
            f"clientERR {s['client_errors']} recover {recover} ({s['figure']})"
        )
    verdict = "pass" if report["passed"] else "FAIL"
    return f"fault suite quick {verdict} in {report['elapsed_s']}s: " + "; ".join(parts)


def test_fault_suite_quick(tmp_path):
    out = tmp_path / "faults.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.faults", "--quick", "--json", str(out)],
        cwd=ROOT,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    output = f"{proc.stdout[-6000:]}\n{proc.stderr[-4000:]}"
    assert out.exists(), output
    report = json.loads(out.read_text())
    append_figure(_summary(report))
    by_name = {s["name"]: s for s in report["scenarios"]}
    assert set(by_name) == SCENARIOS, output
    for name, s in by_name.items():
        assert s["sent"] > 0, f"{name}: nothing was sent"
        assert s["sent"] == s["acked"] == s["delivered"], (name, s)
        assert s["duplicates"] == 0, (name, s)
        assert s["client_errors"] == 0, (name, s["client_error_events"])
        assert not s["failures"], (name, s["failures"], s["extra"])
    storm = by_name["pg_terminate"]
    # Every client of the storm got in (first-attempt success is only a figure).
    assert storm["extra"]["established_after_kills_stopped"] == storm["sockets"], storm
    assert by_name["pg_stop"]["recover_s"] is not None, by_name["pg_stop"]
    assert proc.returncode == 0, output
