"""Print the shared WebSocket disconnect figures (/ws-metrics), or reset them."""

import asyncio
import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from redis.exceptions import RedisError

from ops import redis_client as shared
from realtime import figures as shared_figures


async def _run(*, user: str | None, reset: bool, dry_run: bool) -> dict[str, Any]:
    """The figures; cleared afterwards when reset (and not dry_run)."""
    try:
        report = await shared_figures.ws_metrics(user=user)
        if reset and not dry_run:
            await shared_figures.ws_metrics_reset()
        return report
    finally:
        client = shared.redis_client()
        if client is not None:
            await client.aclose()


class Command(BaseCommand):
    help = (
        "Print the disconnect figures every instance shares (GET /ws-metrics). "
        "--reset clears them all, after printing what it clears."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--json",
            action="store_true",
            dest="as_json",
            help="print the figures as JSON",
        )
        parser.add_argument("--user", default=None, help="only this username's figures")
        parser.add_argument(
            "--reset",
            action="store_true",
            help="clear every user's figures (printed first); not with --user",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="with --reset: print what would be cleared, clear nothing",
        )

    def handle(
        self,
        *args: Any,
        as_json: bool,
        user: str | None,
        reset: bool,
        dry_run: bool,
        **options: Any,
    ) -> None:
        if not settings.REDIS_URL:
            raise CommandError(
                "REDIS_URL is not set: the figures live inside the single server "
                "process; read them at GET /ws-metrics"
            )
        if reset and user:
            raise CommandError("--reset clears every user's figures; drop --user")
        if dry_run and not reset:
            raise CommandError("--dry-run only makes sense with --reset")
        try:
            figures = asyncio.run(_run(user=user, reset=reset, dry_run=dry_run))
        except (RedisError, OSError, TimeoutError) as exc:
            raise CommandError(f"shared state (Redis) unavailable: {exc}") from exc
        if as_json:
            self.stdout.write(json.dumps(figures, indent=2))
        else:
            self.stdout.write(_render(figures))
        if reset:
            verb = "would clear" if dry_run else "cleared"
            self.stdout.write(
                f"{verb} the figures of {figures['total_users_tracked']} user(s)"
            )


def _render(figures: dict[str, Any]) -> str:
    lines = [f"users tracked: {figures['total_users_tracked']}"]
    lines.append("top disconnects:")
    lines.extend(f"  {user}: {count}" for user, count in figures["top_disconnects"])
    lines.append("reasons:")
    for user, reasons in figures["all_reasons"].items():
        described = ", ".join(f"{name} {n}" for name, n in sorted(reasons.items()))
        last = figures["last_disconnect"].get(user, "?")
        lines.append(f"  {user}: {described} (last {last})")
    frequent = ", ".join(figures["frequent_disconnectors"]) or "none"
    lines.append(f"frequent disconnectors: {frequent}")
    return "\n".join(lines)
