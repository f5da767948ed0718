"""Summarise the app's JSON logs: OK / DEGRADED / CRITICAL, or UNKNOWN (no records)."""

import contextlib
import gzip
import json
import sys
import zlib
from collections.abc import Iterator
from datetime import timedelta
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from ops.durations import duration_arg
from ops.logreport import CRITICAL, UNKNOWN, LogReport, render_text

# Monitoring plugins' convention: 2 critical, 3 unknown (1 is a command error).
EXIT_CODES = {CRITICAL: 2, UNKNOWN: 3}


@contextlib.contextmanager
def _open_log(path: str) -> Iterator[IO[str]]:
    """The log as text lines: `-` is stdin, `*.gz` is gunzipped; bad bytes replaced."""
    if path == "-":
        yield sys.stdin
        return
    opener: Any = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        yield handle


class Command(BaseCommand):
    help = (
        "Read Emergence's JSON logs (LOG_FORMAT=json) and print a health report: "
        "errors, warnings, disconnects by reason, database retries, detach cleanups. "
        "Thresholds: LOG_REPORT_* settings. Exit 2 when the status is CRITICAL, 3 "
        "when UNKNOWN (no JSON record to judge: a text log, nothing since --since)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "file",
            nargs="?",
            default="-",
            help="log file to read (.gz allowed); - or nothing reads stdin",
        )
        parser.add_argument(
            "--since",
            type=duration_arg,
            default=None,
            help="only records newer than this (s, m, h or d, e.g. 1h) by timestamp",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            dest="as_json",
            help="print the report as JSON instead of text",
        )

    def handle(
        self,
        *args: Any,
        file: str,
        since: timedelta | None,
        as_json: bool,
        **options: Any,
    ) -> None:
        cutoff = timezone.now() - since if since is not None else None
        report = LogReport(since=cutoff)
        try:
            with _open_log(file) as lines:
                report.feed_lines(lines)
        except (OSError, EOFError, zlib.error) as exc:
            raise CommandError(f"cannot read {file}: {exc}") from exc
        result = report.result()
        if as_json:
            self.stdout.write(json.dumps(result, indent=2))
        else:
            self.stdout.write(render_text(result))
        status = result["status"]
        if status in EXIT_CODES:
            raise CommandError(
                f"status {status}: " + "; ".join(result["status_reasons"]),
                returncode=EXIT_CODES[status],
            )
