"""Delete idle or closed chat sessions not seen for N days, and their events."""

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from ops.db import DatabaseUnavailable, db_call_sync
from sessions_app.maintenance import session_purge, session_purge_count


class Command(BaseCommand):
    help = (
        "Delete idle or closed chat sessions whose last_seen_at is older than N days, "
        "with their connection events. Active sessions are never touched."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--idle-days",
            type=int,
            required=True,
            help="delete sessions last seen more than this many days ago (>= 1)",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="count what would be deleted, delete nothing",
        )

    def handle(self, *args: Any, idle_days: int, dry_run: bool, **options: Any):
        if idle_days < 1:
            raise CommandError("--idle-days must be at least 1")
        cutoff = timezone.now() - timedelta(days=idle_days)
        try:
            if dry_run:
                count = db_call_sync(
                    session_purge_count, idle_before=cutoff, op="session_purge_count"
                )
            else:
                count = session_purge(idle_before=cutoff)
        except DatabaseUnavailable as exc:
            raise CommandError(f"database unavailable: {exc}") from exc
        verb = "would delete" if dry_run else "deleted"
        self.stdout.write(
            f"{verb} {count.sessions} session(s) idle since before "
            f"{cutoff.isoformat(timespec='seconds')} and {count.events} connection "
            "event(s)"
        )
