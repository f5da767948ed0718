"""Create (or reset) the demo login that `make run` prints."""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Create or reset a demo user (staff, for the admin too) and print its login."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="demo", help="login name (demo)")
        parser.add_argument(
            "--password", default="emergence-demo", help="password (emergence-demo)"
        )
        parser.add_argument(
            "--url", default="http://127.0.0.1:8000/", help="where the app is served"
        )

    def handle(self, *args: Any, username: str, password: str, url: str, **opts: Any):
        if not username or not password:
            raise CommandError("username and password must not be empty")
        model = get_user_model()
        user, created = model._default_manager.get_or_create(username=username)
        user.set_password(password)
        user.is_staff = user.is_superuser = True
        user.save()
        verb = "Created" if created else "Reset"
        self.stdout.write(
            f"{verb} demo user. Log in at {url} as {username} / {password} "
            f"(admin: {url}admin/)"
        )
