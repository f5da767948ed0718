"""App config for chat."""

from django.apps import AppConfig


class ChatConfig(AppConfig):
    """Threads, messages and the consumer."""

    name = "chat"

    def ready(self) -> None:
        from accounts.signals import login_revoked
        from chat.logins import login_revoked_publish

        login_revoked.connect(login_revoked_publish)
