"""A production health report from the app's JSON logs (`manage.py log_report`).

Reads what `LOG_FORMAT=json` writes (ops/logs.py): one object per line with
`timestamp`, `level`, `event` and the structured fields of PROTOCOL.md §3. Any line
that is not a JSON object is counted as garbage (the first few by line number) and
otherwise ignored: a report never fails on what a log file contains. A log with no
record to judge (a text log, an empty one, nothing since --since) is UNKNOWN, never
OK: silence is not health.
"""

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings

OK, DEGRADED, CRITICAL, UNKNOWN = "OK", "DEGRADED", "CRITICAL", "UNKNOWN"
TOP_ERRORS = 10
GARBAGE_LINES_KEPT = 5
MESSAGE_CHARS = 200
ERROR_LEVELS = frozenset({"ERROR", "CRITICAL"})
DB_EVENTS = {
    "db_connection_lost": "lost",
    "db_reconnected": "reconnected",
    "db_unavailable": "unavailable",
}
DETACH_EVENTS = {
    "user_detach_cancelled": "cancelled",
    "user_detach_executing": "executed",
}
LOGIN_EVENTS = {"login_failed": "failed", "login_throttled": "throttled"}


@dataclass(frozen=True)
class Thresholds:
    """When a report turns DEGRADED or CRITICAL (a value of 0 disables its rule)."""

    critical_errors: int
    critical_db_unavailable: int
    degraded_errors: int
    degraded_warnings: int
    degraded_db_lost: int

    @classmethod
    def from_settings(cls) -> "Thresholds":
        """The LOG_REPORT_* settings."""
        return cls(
            critical_errors=settings.LOG_REPORT_CRITICAL_ERRORS,
            critical_db_unavailable=settings.LOG_REPORT_CRITICAL_DB_UNAVAILABLE,
            degraded_errors=settings.LOG_REPORT_DEGRADED_ERRORS,
            degraded_warnings=settings.LOG_REPORT_DEGRADED_WARNINGS,
            degraded_db_lost=settings.LOG_REPORT_DEGRADED_DB_LOST,
        )


def parse_timestamp(value: Any) -> datetime | None:
    """An aware datetime from an ISO 8601 string (naive: UTC) or epoch seconds."""
    try:
        if isinstance(value, bool):
            return None
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, tz=UTC)
        if isinstance(value, str):
            # Python's logging asctime: "2025-01-31 12:00:00,123".
            parsed = datetime.fromisoformat(value.strip().replace(",", "."))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def _text(value: Any, limit: int = 64) -> str:
    """A field as a bounded string, whatever its JSON type."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:limit]


class LogReport:
    """Fed line by line; `result()` is the report (PROTOCOL.md §3 events counted)."""

    def __init__(self, *, since: datetime | None = None) -> None:
        self.since = since
        self.lines = 0
        self.analyzed = 0
        self.garbage = 0
        self.garbage_lines: list[int] = []
        self.filtered_out = 0
        self.levels: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.error_samples: dict[str, tuple[str, str]] = {}

    def feed_lines(self, lines: Iterable[str]) -> "LogReport":
        """Feed every line of a log."""
        for line in lines:
            self.feed(line)
        return self

    def feed(self, line: str) -> None:
        """Count one line: a JSON record, a blank line (ignored) or garbage."""
        self.lines += 1
        line = line.strip()
        if not line:
            return
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            record = None
        if not isinstance(record, dict):
            self.garbage += 1
            if len(self.garbage_lines) < GARBAGE_LINES_KEPT:
                self.garbage_lines.append(self.lines)
            return
        if self.since is not None:
            stamp = parse_timestamp(record.get("timestamp"))
            if stamp is None or stamp < self.since:
                self.filtered_out += 1
                return
        self._count(record)

    def _count(self, record: dict[str, Any]) -> None:
        self.analyzed += 1
        level = _text(record.get("level", ""), 16).upper()
        event = _text(record.get("event") or record.get("logger") or "-")
        self.levels[level] += 1
        self.events[event] += 1
        if event == "ws_disconnect":
            reason = record.get("reason")
            if not reason:
                code = record.get("code")
                reason = f"code_{code}" if code is not None else "unknown"
            self.reasons[_text(reason)] += 1
        if level in ERROR_LEVELS:
            self.errors[event] += 1
            # One line per error: tracebacks and driver messages span several.
            message = " ".join(_text(record.get("message", ""), MESSAGE_CHARS).split())
            stamp = _text(record.get("timestamp", ""), 40)
            self.error_samples[event] = (message, stamp)

    def _status(self, thresholds: Thresholds) -> tuple[str, list[str]]:
        if not self.analyzed:
            return UNKNOWN, [
                f"no records analyzed: {self.garbage} line(s) not JSON records, "
                f"{self.filtered_out} outside --since"
            ]
        errors = self.levels["ERROR"] + self.levels["CRITICAL"]
        rules = [
            (CRITICAL, errors, thresholds.critical_errors, "errors", "CRITICAL_ERRORS"),
            (
                CRITICAL,
                self.events["db_unavailable"],
                thresholds.critical_db_unavailable,
                "db_unavailable",
                "CRITICAL_DB_UNAVAILABLE",
            ),
            (DEGRADED, errors, thresholds.degraded_errors, "errors", "DEGRADED_ERRORS"),
            (
                DEGRADED,
                self.levels["WARNING"],
                thresholds.degraded_warnings,
                "warnings",
                "DEGRADED_WARNINGS",
            ),
            (
                DEGRADED,
                self.events["db_connection_lost"],
                thresholds.degraded_db_lost,
                "db_connection_lost",
                "DEGRADED_DB_LOST",
            ),
        ]
        status, why = OK, []
        for verdict, value, limit, what, setting in rules:
            if limit and value >= limit:
                why.append(f"{what} {value} >= LOG_REPORT_{setting} ({limit})")
                if status != CRITICAL:
                    status = verdict
        return status, why

    def _figures(self, names: dict[str, str]) -> dict[str, int]:
        return {name: self.events[event] for event, name in names.items()}

    def result(self, thresholds: Thresholds | None = None) -> dict[str, Any]:
        """The report: status, summary, disconnects, db, detach, logins, top errors."""
        status, why = self._status(thresholds or Thresholds.from_settings())
        top = sorted(self.errors.items(), key=lambda item: (-item[1], item[0]))
        return {
            "status": status,
            "status_reasons": why,
            "summary": {
                "errors": self.levels["ERROR"] + self.levels["CRITICAL"],
                "warnings": self.levels["WARNING"],
                "logs_analyzed": self.analyzed,
                "garbage": self.garbage,
                "filtered_out": self.filtered_out,
            },
            "garbage_lines": list(self.garbage_lines),
            "disconnects_by_reason": dict(
                sorted(self.reasons.items(), key=lambda item: (-item[1], item[0]))
            ),
            "db": self._figures(DB_EVENTS),
            "detach": self._figures(DETACH_EVENTS),
            "logins": self._figures(LOGIN_EVENTS),
            "top_errors": [
                {
                    "event": event,
                    "count": count,
                    "message": self.error_samples[event][0],
                    "last_seen": self.error_samples[event][1],
                }
                for event, count in top[:TOP_ERRORS]
            ],
        }


def render_text(report: dict[str, Any]) -> str:
    """The report for a terminal."""
    summary = report["summary"]

    def pairs(figures: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in figures.items()) or "none"

    lines = [
        f"Emergence log report: {report['status']}",
        f"  records analyzed: {summary['logs_analyzed']} "
        f"(errors {summary['errors']}, warnings {summary['warnings']}); "
        f"garbage lines {summary['garbage']}{_line_numbers(report)}; "
        f"outside --since {summary['filtered_out']}",
        f"  disconnects by reason: {pairs(report['disconnects_by_reason'])}",
        f"  database: {pairs(report['db'])}",
        f"  detach: {pairs(report['detach'])}",
        f"  logins: {pairs(report['logins'])}",
    ]
    if report["top_errors"]:
        lines.append("  top errors:")
        lines.extend(
            f"    {e['count']}x {e['event']} (last {e['last_seen'] or '?'}): "
            f"{e['message']}"
            for e in report["top_errors"]
        )
    if report["status_reasons"]:
        lines.append("  why: " + "; ".join(report["status_reasons"]))
    if not summary["logs_analyzed"] and summary["garbage"]:
        lines.append("  note: no JSON records at all; is LOG_FORMAT=json set?")
    return "\n".join(lines)


def _line_numbers(report: dict[str, Any]) -> str:
    """Where the first garbage lines are, as " (lines 1, 2, 3, ...)"."""
    numbers = report["garbage_lines"]
    if not numbers:
        return ""
    more = ", ..." if report["summary"]["garbage"] > len(numbers) else ""
    plural = "s" if len(numbers) > 1 else ""
    return f" (line{plural} {', '.join(map(str, numbers))}{more})"
