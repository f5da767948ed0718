"""log_report on hand-made logs: counts, verdicts, --since, garbage, exit codes.

A log with nothing to judge is UNKNOWN (exit 3), never OK.

A real Daphne run's log is reported on in tests/e2e/test_log_report.py.
"""

import gzip
import io
import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command

from ops.logreport import LogReport, Thresholds, parse_timestamp

NOW = datetime.now(tz=UTC)


def rec(event: str, level: str = "INFO", minutes_ago: float = 1, **fields) -> str:
    """One JSON log line as ops.logs.JsonFormatter writes it."""
    stamp = (NOW - timedelta(minutes=minutes_ago)).isoformat(timespec="milliseconds")
    return json.dumps(
        {
            "timestamp": stamp,
            "level": level,
            "logger": "test",
            "message": f"{event} message",
            "event": event,
            "instance": "a",
            **fields,
        }
    )


def disconnect(code: int, reason: str, level: str = "INFO", **kw) -> str:
    return rec("ws_disconnect", level, code=code, reason=reason, session_id="s", **kw)


HEALTHY = [
    disconnect(1000, "normal_closure"),
    disconnect(1000, "normal_closure"),
    disconnect(1001, "going_away"),
    disconnect(1006, "abnormal_closure"),
    rec("user_detach_delay_start"),
    rec("user_detach_cancelled"),
    rec("user_detach_executing"),
    rec("user_detach_executing"),
    rec("db_connection_lost", "WARNING"),
    rec("db_reconnected"),
    rec("http_access", status=200),
]

GARBAGE = [
    "Traceback (most recent call last):",
    '  File "x.py", line 1, in <module>',
    "[1, 2, 3]",
    '"a string"',
    "42",
    "null",
    '{"unterminated": ',
    "\x00\x01\x02 binary",
    "[" * 5000 + "]" * 5000,
]


def report_of(lines, since=None, thresholds=None) -> dict:
    return LogReport(since=since).feed_lines(lines).result(thresholds)


def test_counts_of_a_healthy_log():
    report = report_of(HEALTHY + [""] * 3)
    assert report["status"] == "OK", report
    assert report["status_reasons"] == []
    assert report["summary"] == {
        "errors": 0,
        "warnings": 1,
        "logs_analyzed": len(HEALTHY),
        "garbage": 0,
        "filtered_out": 0,
    }
    assert report["disconnects_by_reason"] == {
        "normal_closure": 2,
        "abnormal_closure": 1,
        "going_away": 1,
    }
    assert list(report["disconnects_by_reason"]) == [
        "normal_closure",
        "abnormal_closure",
        "going_away",
    ]
    assert report["db"] == {"lost": 1, "reconnected": 1, "unavailable": 0}
    assert report["detach"] == {"cancelled": 1, "executed": 2}
    assert report["logins"] == {"failed": 0, "throttled": 0}
    assert report["top_errors"] == []


def test_garbage_is_counted_never_fatal():
    report = report_of(GARBAGE + HEALTHY)
    assert report["summary"]["garbage"] == len(GARBAGE)
    assert report["summary"]["logs_analyzed"] == len(HEALTHY)
    assert report["status"] == "OK"


def test_hostile_records_never_crash():
    rng = random.Random(5)
    values = [None, True, 1e308, -1, "", "x" * 10_000, [1], {"a": {"b": []}}, 1000]
    lines = []
    for _ in range(500):
        fields = {
            key: rng.choice(values)
            for key in ("timestamp", "level", "event", "reason", "code", "message")
            if rng.random() < 0.7
        }
        lines.append(json.dumps(fields))
    lines += ['{"timestamp": 1e400, "level": "ERROR"}', '{"timestamp": NaN}']
    lines += ["".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(80))] * 20
    for since in (None, NOW - timedelta(hours=1)):
        report = report_of(lines, since=since)
        assert report["summary"]["logs_analyzed"] + report["summary"][
            "garbage"
        ] + report["summary"]["filtered_out"] == len(lines)
        json.dumps(report)  # serialisable, whatever came in


def test_errors_and_top_errors():
    lines = HEALTHY + [
        rec("ws_unhandled_exception", "ERROR", exc_info="Traceback ..."),
        rec("db_unavailable", "ERROR", minutes_ago=3),
        rec("db_unavailable", "ERROR", minutes_ago=2),
        rec("boom", "CRITICAL"),
    ]
    report = report_of(lines)
    assert report["summary"]["errors"] == 4
    assert report["db"]["unavailable"] == 2
    top = report["top_errors"]
    assert [(e["event"], e["count"]) for e in top] == [
        ("db_unavailable", 2),
        ("boom", 1),
        ("ws_unhandled_exception", 1),
    ]
    assert top[0]["message"] == "db_unavailable message"
    assert top[0]["last_seen"] == json.loads(lines[-2])["timestamp"]


THRESHOLDS = Thresholds(
    critical_errors=10,
    critical_db_unavailable=1,
    degraded_errors=1,
    degraded_warnings=5,
    degraded_db_lost=3,
)


@pytest.mark.parametrize(
    ("extra", "status", "why"),
    [
        ([], "OK", []),
        ([rec("x", "ERROR")], "DEGRADED", ["errors 1 >= LOG_REPORT_DEGRADED_ERRORS"]),
        (
            [rec("w", "WARNING")] * 4,
            "DEGRADED",
            ["warnings 5 >= LOG_REPORT_DEGRADED_WARNINGS"],
        ),
        (
            [rec("db_connection_lost", "WARNING")] * 2,
            "DEGRADED",
            ["db_connection_lost 3 >= LOG_REPORT_DEGRADED_DB_LOST"],
        ),
        (
            [rec("db_unavailable", "ERROR")],
            "CRITICAL",
            ["db_unavailable 1 >= LOG_REPORT_CRITICAL_DB_UNAVAILABLE"],
        ),
        (
            [rec("x", "ERROR")] * 10,
            "CRITICAL",
            [
                "errors 10 >= LOG_REPORT_CRITICAL_ERRORS",
                "errors 10 >= LOG_REPORT_DEGRADED_ERRORS",
            ],
        ),
    ],
)
def test_status_rules(extra, status, why):
    report = report_of(HEALTHY + extra, thresholds=THRESHOLDS)
    assert report["status"] == status
    for expected in why:
        assert any(r.startswith(expected) for r in report["status_reasons"]), report
    if status != "OK":
        assert len(report["status_reasons"]) >= len(why)


def test_zero_disables_a_rule():
    off = Thresholds(0, 0, 0, 0, 0)
    lines = HEALTHY + [rec("db_unavailable", "ERROR")] * 20
    assert report_of(lines, thresholds=off)["status"] == "OK"


def test_thresholds_come_from_settings(settings):
    settings.LOG_REPORT_DEGRADED_ERRORS = 3
    settings.LOG_REPORT_CRITICAL_DB_UNAVAILABLE = 0
    lines = HEALTHY + [rec("db_unavailable", "ERROR")] * 2
    assert report_of(lines)["status"] == "OK"
    assert report_of(lines + [rec("x", "ERROR")])["status"] == "DEGRADED"


def test_since_filters_by_record_timestamp():
    old = [
        rec("db_unavailable", "ERROR", minutes_ago=180),
        disconnect(1006, "abnormal_closure", minutes_ago=61),
    ]
    undated = [json.dumps({"level": "ERROR", "event": "x"})]
    report = report_of(old + undated + HEALTHY, since=NOW - timedelta(hours=1))
    assert report["summary"]["filtered_out"] == 3
    assert report["summary"]["logs_analyzed"] == len(HEALTHY)
    assert report["status"] == "OK"
    assert report["disconnects_by_reason"]["abnormal_closure"] == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-01-31T12:00:00.123+00:00", datetime(2025, 1, 31, 12, 0, 0, 123000, UTC)),
        ("2025-01-31T12:00:00Z", datetime(2025, 1, 31, 12, tzinfo=UTC)),
        ("2025-01-31 12:00:00,500", datetime(2025, 1, 31, 12, 0, 0, 500000, UTC)),
        ("2025-01-31T14:00:00+02:00", datetime(2025, 1, 31, 12, tzinfo=UTC)),
        (1738324800, datetime(2025, 1, 31, 12, tzinfo=UTC)),
        ("yesterday", None),
        (None, None),
        (True, None),
        (1e400, None),
        ([2025], None),
    ],
)
def test_parse_timestamp(value, expected):
    assert parse_timestamp(value) == expected


# --- the command ---------------------------------------------------------------------


@pytest.fixture
def log_file(tmp_path):
    def write(lines, name="app.log"):
        path = tmp_path / name
        if name.endswith(".gz"):
            with gzip.open(path, "wt") as fh:
                fh.write("\n".join(lines) + "\n")
        else:
            path.write_text("\n".join(lines) + "\n")
        return str(path)

    return write


def command(*args: str) -> str:
    out = io.StringIO()
    call_command("log_report", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_command_json(log_file):
    report = json.loads(command(log_file(HEALTHY + GARBAGE[:2]), "--json"))
    assert report == report_of(HEALTHY + GARBAGE[:2])
    assert report["summary"]["garbage"] == 2


def test_command_text(log_file):
    out = command(log_file(HEALTHY + [rec("x", "ERROR")]))
    assert out.startswith("Emergence log report: DEGRADED\n")
    assert "records analyzed: 12 (errors 1, warnings 1); garbage lines 0" in out
    assert "disconnects by reason: normal_closure 2, abnormal_closure 1" in out
    assert "database: lost 1, reconnected 1, unavailable 0" in out
    assert "detach: cancelled 1, executed 2" in out
    assert "1x x (last " in out
    assert "why: errors 1 >= LOG_REPORT_DEGRADED_ERRORS (1)" in out


def test_command_critical_exits_2_after_printing(log_file):
    path = log_file(HEALTHY + [rec("db_unavailable", "ERROR")])
    out = io.StringIO()
    with pytest.raises(CommandError, match="status CRITICAL") as raised:
        call_command("log_report", path, "--json", stdout=out, stderr=io.StringIO())
    assert raised.value.returncode == 2
    assert json.loads(out.getvalue())["status"] == "CRITICAL"


def test_command_since_and_gzip(log_file):
    path = log_file(
        [rec("db_unavailable", "ERROR", minutes_ago=120)] + HEALTHY, "app.log.gz"
    )
    report = json.loads(command(path, "--since", "1h", "--json"))
    assert report["status"] == "OK"
    assert report["summary"]["filtered_out"] == 1
    with pytest.raises(CommandError):
        command(path, "--json")


def test_command_reads_stdin(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(HEALTHY) + "\nnoise\n"))
    report = json.loads(command("-", "--json"))
    assert report["summary"]["logs_analyzed"] == len(HEALTHY)
    assert report["summary"]["garbage"] == 1


# What `make run` writes (LOG_FORMAT=text): not one line of it is a JSON record.
TEXT_LOG = [
    "2026-11-30 12:00:00,001 INFO daphne.server [a-1] Listening on TCP address ...",
    "",
    "2026-11-30 12:00:01,002 ERROR ops.db [a-1] db_unavailable op=ws_auth_jwt",
    "Traceback (most recent call last):",
    '  File "ops/db.py", line 1, in db_call',
    "psycopg.OperationalError: connection refused",
    "2026-11-30 12:00:02,003 WARNING chat.disconnects [a-1] ws_disconnect ...",
]


def unknown(path: str, *args: str) -> tuple[str, CommandError]:
    """The command's stdout and its error, for a log it must call UNKNOWN."""
    out = io.StringIO()
    with pytest.raises(CommandError, match="status UNKNOWN") as raised:
        call_command("log_report", path, *args, stdout=out, stderr=io.StringIO())
    return out.getvalue(), raised.value


def test_a_text_log_is_unknown_never_ok(log_file):
    out, error = unknown(log_file(TEXT_LOG))
    assert error.returncode == 3
    assert out.startswith("Emergence log report: UNKNOWN\n")
    assert "records analyzed: 0 " in out
    # The blank line 2 is neither a record nor garbage; the numbers are the file's.
    assert "garbage lines 6 (lines 1, 3, 4, 5, 6, ...)" in out
    assert "is LOG_FORMAT=json set?" in out
    assert "why: no records analyzed: 6 line(s) not JSON records" in out


def test_unknown_in_json_names_the_unparsed_lines(log_file):
    out, error = unknown(log_file(GARBAGE[:2] + [""] + GARBAGE[2:3]), "--json")
    report = json.loads(out)
    assert report["status"] == "UNKNOWN"
    assert report["garbage_lines"] == [1, 2, 4]
    assert report["summary"]["garbage"] == 3
    assert report["status_reasons"] == [
        "no records analyzed: 3 line(s) not JSON records, 0 outside --since"
    ]
    assert str(error) == "status UNKNOWN: " + report["status_reasons"][0]


@pytest.mark.parametrize(
    ("lines", "args"),
    [
        ([], []),
        ([""] * 3, []),
        ([rec("db_unavailable", "ERROR", minutes_ago=120)], ["--since", "1h"]),
    ],
)
def test_nothing_to_judge_is_unknown(log_file, lines, args):
    out, error = unknown(log_file(lines), *args)
    assert error.returncode == 3
    assert "garbage lines 0;" in out


def test_garbage_beside_records_is_located_and_the_verdict_stands():
    report = report_of(HEALTHY[:2] + ["noise"] + HEALTHY[2:] + GARBAGE)
    assert report["status"] == "OK"
    assert report["garbage_lines"] == [3, 13, 14, 15, 16]  # the first five
    assert report["summary"]["garbage"] == 1 + len(GARBAGE)


@pytest.mark.parametrize(
    "args", [["/nonexistent/app.log"], ["--since", "1y"], ["a.log", "b.log"]]
)
def test_command_bad_arguments(args, tmp_path):
    with pytest.raises(CommandError):
        command(*args)


def test_command_directory_and_bad_gzip(tmp_path):
    with pytest.raises(CommandError, match="cannot read"):
        command(str(tmp_path))
    bad = tmp_path / "x.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage-not-deflate" * 10)
    with pytest.raises(CommandError, match="cannot read"):
        command(str(bad))
