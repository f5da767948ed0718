"""App config for ops."""

from django.apps import AppConfig


class OpsConfig(AppConfig):
    """How it is doing: DB retries, the Redis client, health, metrics, logs."""

    name = "ops"
    verbose_name = "Operations"
