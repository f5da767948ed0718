"""App config for accounts."""

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Who you are: JWTs, WebSocket auth, the login page and its throttle."""

    name = "accounts"
    verbose_name = "Accounts"
