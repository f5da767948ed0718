"""Check that the database answers, through the app's own retry helper."""

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from ops.db import DatabaseUnavailable, db_call_sync, db_ping


class Command(BaseCommand):
    help = (
        "Connect to the database with the app's retry policy (db_call_sync + "
        "db_ping) and print a one-line verdict with the latency; exit 1 when it "
        "stays unavailable."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--retries",
            type=int,
            default=None,
            help="retries after the first attempt (default: DB_MAX_RETRIES)",
        )

    def handle(self, *args: Any, retries: int | None, **options: Any) -> None:
        if retries is not None and retries < 0:
            raise CommandError("--retries must be 0 or more")
        db = connection.settings_dict
        target = f"{connection.vendor} {db.get('NAME')}"
        if db.get("HOST"):
            target += f" at {db['HOST']}:{db.get('PORT') or 'default port'}"
        started = time.perf_counter()
        try:
            latency_ms = db_call_sync(db_ping, op="dbcheck", retries=retries)
        except DatabaseUnavailable as exc:
            elapsed = time.perf_counter() - started
            error = " ".join(str(exc).split())
            raise CommandError(
                f"database UNAVAILABLE: {target} after {elapsed:.2f} s: {error}"
            ) from exc
        elapsed = time.perf_counter() - started
        self.stdout.write(
            f"database OK: {target} answered in {latency_ms:.1f} ms "
            f"({elapsed:.2f} s with retries)"
        )
