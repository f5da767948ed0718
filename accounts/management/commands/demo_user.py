"""Create the demo login that `make run` prints, once; never touch it afterwards."""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

# `make run`'s login; the server prints it once it listens (emergence/apps.py).
DEMO_USERNAME = "demo"
DEMO_PASSWORD = "emergence-demo"


def demo_user_ensure(*, username: str, password: str, reset: bool) -> tuple[Any, str]:
    """The staff user `username`, created with `password` if missing; what was done.

    An existing user keeps its password unless `reset`: setting it again (even to
    the same value) changes the hash that every session of the user is checked
    against, which logs that user out everywhere.
    """
    model = get_user_model()
    with transaction.atomic():
        user = (
            model._default_manager.select_for_update()
            .filter(**{model.USERNAME_FIELD: username})
            .first()
        )
        if user is None:
            user = model._default_manager.create_superuser(
                **{model.USERNAME_FIELD: username}, email="", password=password
            )
            return user, "created"
        if not reset:
            return user, "kept"
        user.set_password(password)
        user.save(update_fields=["password"])
        return user, "reset"


class Command(BaseCommand):
    help = (
        "Create a staff user (superuser, for /admin/ too) for trying the app, unless "
        "it exists; an existing user's password is left alone (--reset-password)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--username", default=DEMO_USERNAME, help=f"login name ({DEMO_USERNAME})"
        )
        parser.add_argument(
            "--password",
            default=DEMO_PASSWORD,
            help=f"password of a new user, or with --reset-password ({DEMO_PASSWORD})",
        )
        parser.add_argument(
            "--reset-password",
            action="store_true",
            help="set the password of an existing user too (logs it out everywhere)",
        )
        parser.add_argument(
            "--url",
            default="http://127.0.0.1:8000/",
            help="where the app is served, for the message (http://127.0.0.1:8000/)",
        )

    def handle(
        self,
        *args: Any,
        username: str,
        password: str,
        reset_password: bool,
        url: str,
        **options: Any,
    ) -> None:
        if not username or not password:
            raise CommandError("username and password must not be empty")
        _, done = demo_user_ensure(
            username=username, password=password, reset=reset_password
        )
        if done == "kept":
            self.stdout.write(
                f"Demo user {username} exists; its password is unchanged "
                f"(--reset-password sets it to the one given). Log in at {url}"
            )
            return
        verb = "Created" if done == "created" else "Reset the password of"
        self.stdout.write(
            f"{verb} demo user {username}. Log in at {url} as {username} / "
            f"{password} (admin: {url}admin/)"
        )
