"""Project wiring that must run once Django is set up, whatever the entry point."""

import logging

from django.apps import AppConfig
from django.conf import settings

logger = logging.getLogger(__name__)


class EmergenceConfig(AppConfig):
    """Applies the third-party fixes (emergence.compat) and says how it runs."""

    name = "emergence"
    verbose_name = "Emergence"

    def ready(self) -> None:
        from emergence import compat

        # Before the first database connection creates Django's pool, and before
        # Daphne's server object exists (it is made after the application loads).
        # A patch whose target is gone stops the start-up here (compat/guard.py).
        compat.apply()
        if not settings.REDIS_URL:
            logger.warning(
                "REDIS_URL is not set: in-memory channel layer and local cache; "
                "this is single-instance only (do not run several processes)",
                extra={"event": "single_instance_mode"},
            )
