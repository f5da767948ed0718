"""Finish grace-period cleanups that a dead instance left pending."""

import asyncio
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ops.db import DatabaseUnavailable
from sessions_app.reaper import reap


class Command(BaseCommand):
    help = (
        "Mark sessions idle whose sockets vanished with their instance, and broadcast "
        "the presence leaves they owe."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="list what would be reaped, change nothing",
        )

    def handle(self, *args: Any, dry_run: bool, **options: Any) -> None:
        try:
            result = asyncio.run(reap(dry_run=dry_run))
        except DatabaseUnavailable as exc:
            raise CommandError(f"database unavailable: {exc}") from exc
        verb = "would mark" if dry_run else "marked"
        self.stdout.write(f"{verb} {len(result.sessions_idled)} session(s) idle")
        for session_id in result.sessions_idled:
            self.stdout.write(f"  session {session_id}")
        verb = "would broadcast" if dry_run else "broadcast"
        self.stdout.write(f"{verb} {len(result.presence_left)} presence leave(s)")
        for thread_id, user in result.presence_left:
            self.stdout.write(f"  {user} left {thread_id}")
