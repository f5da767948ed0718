"""Delete connection events older than a duration."""

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from ops.db import DatabaseUnavailable, db_call_sync
from ops.durations import duration_arg
from sessions_app.maintenance import (
    connection_event_prune,
    connection_event_prune_count,
)


class Command(BaseCommand):
    help = (
        "Delete connection events (the audit trail of sockets) older than a duration."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=duration_arg,
            required=True,
            help="age of the events to delete: a number with s, m, h or d (e.g. 7d)",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="count what would be deleted, delete nothing",
        )

    def handle(
        self, *args: Any, older_than: timedelta, dry_run: bool, **options: Any
    ) -> None:
        cutoff = timezone.now() - older_than
        try:
            if dry_run:
                count = db_call_sync(
                    connection_event_prune_count,
                    created_before=cutoff,
                    op="connection_event_prune_count",
                )
            else:
                count = connection_event_prune(created_before=cutoff)
        except DatabaseUnavailable as exc:
            raise CommandError(f"database unavailable: {exc}") from exc
        verb = "would delete" if dry_run else "deleted"
        self.stdout.write(
            f"{verb} {count} connection event(s) created before "
            f"{cutoff.isoformat(timespec='seconds')}"
        )
