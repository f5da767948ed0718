"""The test run's Daphne processes (bench/servers.py) on its database and Redis."""

from pathlib import Path

from django.conf import settings
from django.db import connection

from bench.servers import ROOT, Daphne, clean_environ, free_port

# ROOT and free_port are imported from here by other tests.
__all__ = [
    "APP_NAME_PREFIX",
    "ROOT",
    "DaphneProcess",
    "free_port",
    "subprocess_env",
    "test_database_url",
]

APP_NAME_PREFIX = "emergence-e2e"


def subprocess_env(**overrides: str) -> dict[str, str]:
    """This environment minus the test runner's, for a production-like subprocess."""
    env = clean_environ()
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "emergence.settings",
            "DEBUG": "0",
            "SECRET_KEY": settings.SECRET_KEY,
        }
    )
    env.update(overrides)
    return env


def test_database_url(application_name: str, port: int | None = None) -> str:
    """The URL of the test database pytest-django created, for a subprocess."""
    db = connection.settings_dict
    host = db.get("HOST") or "127.0.0.1"
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    port = port or int(db.get("PORT") or 5432)
    return (
        f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"
        f"?application_name={application_name}"
    )


class DaphneProcess(Daphne):
    """emergence.asgi on Daphne with this test run's database, Redis and secrets."""

    kind = "daphne"
    # `make run`'s flags but the application close timeout, left at Daphne's default
    # (10 s; `make run` passes 15, room for a 10 s drain): tests drain for less.
    flags = [
        "--ping-interval",
        "20",
        "--ping-timeout",
        "60",
        "--websocket_connect_timeout",
        "15",
    ]
    start_timeout = 20.0
    stop_timeout = 10.0

    def __init__(
        self, name: str, log_dir: Path, port: int | None = None, **env_overrides: str
    ) -> None:
        super().__init__(name, None, log_dir, port)
        self.env_overrides = env_overrides

    def environment(self) -> dict[str, str]:
        env = subprocess_env()
        env.update(
            {
                "JWT_SECRET": settings.JWT_SECRET,
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "DATABASE_URL": test_database_url(f"{APP_NAME_PREFIX}-{self.name}"),
                "REDIS_URL": settings.REDIS_URL,
                "SHARED_KEY_PREFIX": settings.SHARED_KEY_PREFIX,
                "CHANNEL_LAYER_PREFIX": settings.CHANNEL_LAYER_PREFIX,
                "CACHE_KEY_PREFIX": settings.CACHES["default"].get("KEY_PREFIX", ""),
                "INSTANCE_ID": self.name,
                "LOG_FORMAT": "json",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.env_overrides)
        return env
