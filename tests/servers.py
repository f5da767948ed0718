"""Real Daphne processes for end-to-end and fault tests, with their JSON logs."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

from bench.harness import free_port, json_records, stop_process

ROOT = Path(__file__).resolve().parent.parent
APP_NAME_PREFIX = "emergence-e2e"


def subprocess_env(**overrides: str) -> dict[str, str]:
    """This environment minus the test runner's, for a production-like subprocess."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "PYTEST_", "TEST_"))
    }
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


class DaphneProcess:
    """One Daphne serving emergence.asgi on a loopback port, logging JSON to a file."""

    def __init__(
        self, name: str, log_dir: Path, port: int | None = None, **env_overrides: str
    ) -> None:
        self.name = name
        # A fixed port lets a test start a replacement on the port of a stopped one.
        self.port = port or free_port()
        self.log_path = log_dir / f"daphne-{name}-{self.port}.log"
        self.env_overrides = env_overrides
        self.proc: subprocess.Popen | None = None
        self._log_file = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

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

    def start(self, timeout: float = 20.0) -> "DaphneProcess":
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "emergence.server",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "--ping-interval",
                "20",
                "--ping-timeout",
                "60",
                "--websocket_connect_timeout",
                "15",
                "emergence.asgi:application",
            ],
            cwd=ROOT,
            env=self.environment(),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daphne {self.name} exited: {self.log_text()}")
            try:
                with urllib.request.urlopen(f"{self.http}/health/liveness", timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"daphne {self.name} did not start: {self.log_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Stop the process (SIGTERM, then SIGKILL); return its exit code."""
        if self.proc is None:
            return None
        stop_process(self.proc, sig, timeout)
        if self._log_file:
            self._log_file.close()
            self._log_file = None
        return self.proc.returncode

    def kill(self) -> None:
        """kill -9: the instance dies with no chance to clean up."""
        self.stop(signal.SIGKILL)

    def log_text(self) -> str:
        return (
            self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        )

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records so far (lines that are not JSON are skipped)."""
        return json_records(self.log_path)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("event") == name]


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until predicate() is truthy; return its value or raise AssertionError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")
