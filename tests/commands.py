"""`manage.py` in a subprocess, the way an operator runs it: production settings."""

import os
import subprocess
import sys

from django.conf import settings

from tests.servers import ROOT, test_database_url

# Nothing of the developer's shell or of pytest may leak into the command's settings.
STRIPPED_PREFIXES = (
    "DJANGO_",
    "PYTEST_",
    "TEST_",
    "SECURE_",
    "SESSION_COOKIE_",
    "CSRF_COOKIE_",
    "LOG_REPORT_",
)
STRIPPED = {"DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "LOG_FORMAT"}


def manage(
    *args: str, timeout: float = 60, **env: str | None
) -> subprocess.CompletedProcess:
    """Run `manage.py ARGS` with DEBUG=0 on the test services; `env` (None: unset)."""
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(STRIPPED_PREFIXES) and k not in STRIPPED
    }
    environment.update(
        {
            # manage.py's own default is the local development settings.
            "DJANGO_SETTINGS_MODULE": "emergence.settings",
            "DEBUG": "0",
            "SECRET_KEY": settings.SECRET_KEY,
            "DATABASE_URL": test_database_url("emergence-command"),
            "REDIS_URL": settings.REDIS_URL,
        }
    )
    for name, value in env.items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
