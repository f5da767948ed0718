"""App config for accounts."""

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Who you are: JWTs, WebSocket auth, the login page and its throttle."""

    name = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.signals import user_logged_out
        from django.db.models.signals import post_init, post_save

        from accounts import signals

        user_model = get_user_model()
        post_init.connect(signals.user_loaded, sender=user_model)
        post_save.connect(signals.user_saved, sender=user_model)
        user_logged_out.connect(signals.user_logged_out)
