"""App config for chat."""

from django.apps import AppConfig


class ChatConfig(AppConfig):
    """Threads, messages and the consumer."""

    name = "chat"
