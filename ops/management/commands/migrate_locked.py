"""`migrate` under a PostgreSQL advisory lock: the deploy step, safe to start twice."""

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, DatabaseError

from ops.locks import LockTimeout, advisory_lock

# One name for every copy of this command, whichever instance runs it.
LOCK_NAME = "emergence.migrate"


class Command(BaseCommand):
    help = (
        "Run migrate holding a PostgreSQL advisory lock: a copy started at the same "
        "time (two instances deploying at once) waits, then finds nothing left to "
        "do, instead of failing on half-created tables. No lock on SQLite. "
        "`make migrate` runs it with the production settings."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--wait",
            type=float,
            default=600.0,
            help="seconds to wait for another migrate to finish (600), then fail",
        )
        parser.add_argument(
            "--database",
            default=DEFAULT_DB_ALIAS,
            help="the database alias to migrate (default)",
        )
        parser.add_argument(
            "--noinput",
            "--no-input",
            action="store_false",
            dest="interactive",
            help="never prompt (passed on to migrate)",
        )
        parser.add_argument(
            "--plan",
            action="store_true",
            help="dry run: print the migrations that would be applied, apply none",
        )

    def handle(
        self,
        *args: Any,
        wait: float,
        database: str,
        interactive: bool,
        plan: bool,
        **options: Any,
    ) -> None:
        if wait <= 0:
            raise CommandError("--wait must be more than 0 seconds")
        try:
            with advisory_lock(LOCK_NAME, timeout=wait, using=database) as waited:
                if waited >= 1:
                    self.stderr.write(
                        f"waited {waited:.1f} s for another migrate to finish"
                    )
                call_command(
                    "migrate",
                    database=database,
                    interactive=interactive,
                    plan=plan,
                    verbosity=options["verbosity"],
                    # The streams under our OutputWrappers: wrapped twice, every
                    # "Applying x..." would get its own line before its "OK".
                    stdout=self.stdout._out,
                    stderr=self.stderr._out,
                )
        except LockTimeout as exc:
            raise CommandError(f"migrate lock not taken: {exc}") from exc
        except DatabaseError as exc:
            raise CommandError(f"migrate failed: {exc}") from exc
