"""App config for realtime."""

from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    """Who is connected now, in Redis: presence, detach markers, shared figures."""

    name = "realtime"
    verbose_name = "Realtime"
