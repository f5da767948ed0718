"""Issue a JWT for an API client."""

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from accounts.tokens import token_issue
from ops.db import DatabaseUnavailable, db_call_sync
from ops.durations import duration_arg


def _active_user(username: str) -> Any | None:
    model = get_user_model()
    return model._default_manager.filter(
        **{model.USERNAME_FIELD: username, "is_active": True}
    ).first()


class Command(BaseCommand):
    help = (
        "Print a JWT (PROTOCOL.md §1) for an active user, for an API client; "
        "only the token goes to stdout."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="the user the token authenticates")
        parser.add_argument(
            "--ttl",
            type=duration_arg,
            default=None,
            help="lifetime: a number with s, m, h or d (default: JWT_TTL_SECONDS)",
        )

    def handle(
        self, *args: Any, username: str, ttl: timedelta | None, **options: Any
    ) -> None:
        try:
            user = db_call_sync(_active_user, username, op="issue_token_user")
        except DatabaseUnavailable as exc:
            raise CommandError(f"database unavailable: {exc}") from exc
        if user is None:
            raise CommandError(f"no active user named {username!r}")
        if ttl is None:
            ttl = timedelta(seconds=settings.JWT_TTL_SECONDS)
        ttl_seconds = max(1, int(ttl.total_seconds()))
        token = token_issue(
            user_id=user.pk, username=user.get_username(), ttl_seconds=ttl_seconds
        )
        self.stdout.write(token)
        if options["verbosity"] >= 1:
            expires = timezone.now() + timedelta(seconds=ttl_seconds)
            self.stderr.write(
                f"token for {user.get_username()} (id {user.pk}), valid "
                f"{ttl_seconds} s, until {expires.isoformat(timespec='seconds')}"
            )
