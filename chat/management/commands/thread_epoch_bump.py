"""Give threads a new epoch, so that clients drop what they hold and reload."""

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from chat.epochs import thread_epochs_bump
from chat.models import Thread
from chat.protocol import SLUG_RE
from ops.db import DatabaseUnavailable, db_call_sync


class Command(BaseCommand):
    help = (
        "Give every thread (or --thread ID) a new epoch. Run it after restoring the "
        "database from a backup or promoting a replica that may have lost commits: "
        "clients holding the old epoch are answered reset=true and reload the thread "
        "over HTTP instead of keeping messages the server no longer has."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--thread",
            dest="thread_id",
            default=None,
            help="only this thread id (default: every thread)",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="print what would change and change nothing",
        )

    def handle(self, *args: object, **options: object) -> None:
        thread_id = options["thread_id"]
        dry_run = bool(options["dry_run"])
        if thread_id is not None and not SLUG_RE.fullmatch(str(thread_id)):
            raise CommandError("--thread must be 1-64 characters of [A-Za-z0-9_-]")
        try:
            # One transaction: a retry after a lost connection redoes all of it.
            changes = db_call_sync(
                thread_epochs_bump,
                thread_id=thread_id and str(thread_id),
                dry_run=dry_run,
                op="thread_epochs_bump",
            )
        except Thread.DoesNotExist as exc:
            raise CommandError(str(exc)) from exc
        except DatabaseUnavailable as exc:
            raise CommandError(f"database unavailable: {exc}") from exc
        except DatabaseError as exc:
            raise CommandError(f"database error: {exc}") from exc
        verb = "would change" if dry_run else "changed"
        for change in changes:
            new = "(a new epoch)" if dry_run else change.new
            self.stdout.write(f"{change.thread_id}: {change.old} -> {new}")
        self.stdout.write(f"{verb} the epoch of {len(changes)} thread(s)")
