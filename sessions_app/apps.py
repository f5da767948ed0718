"""App config for sessions_app."""

from django.apps import AppConfig


class SessionsAppConfig(AppConfig):
    """Chat sessions, connection events, and the cleanup after a socket closes."""

    name = "sessions_app"
    verbose_name = "Chat sessions"
