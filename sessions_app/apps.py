"""App config for sessions_app."""

import logging

from django.apps import AppConfig
from django.conf import settings

logger = logging.getLogger(__name__)


class SessionsAppConfig(AppConfig):
    """Chat sessions, connection events and DB resilience."""

    name = "sessions_app"
    verbose_name = "Chat sessions"

    def ready(self) -> None:
        from sessions_app import pool

        # Before the first connection creates Django's pool.
        pool.apply()
        if not settings.REDIS_URL:
            logger.warning(
                "REDIS_URL is not set: in-memory channel layer and local cache; "
                "this is single-instance only (do not run several processes)",
                extra={"event": "single_instance_mode"},
            )
