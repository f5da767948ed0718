"""manage.py on a fresh checkout: local settings, said so; production refuses them."""

import os
import subprocess
import sys

from tests.commands import STRIPPED, STRIPPED_PREFIXES, manage
from tests.servers import ROOT

# A fresh clone's shell: none of the variables a deployment sets.
FRESH = {
    "DJANGO_SETTINGS_MODULE": None,
    "DEBUG": None,
    "SECRET_KEY": None,
    "JWT_SECRET": None,
    "DATABASE_URL": None,
    "REDIS_URL": None,
}
OUR_COMMANDS = [
    "dbcheck",
    "log_report",
    "migrate_locked",
    "ws_metrics",
    "issue_token",
    "purge_sessions",
    "prune_events",
    "reap_sessions",
    "demo_user",
]
SHOW_SETTINGS = (
    "from django.conf import settings as s; "
    "print(s.SETTINGS_MODULE, s.DEBUG, s.SECRET_KEY, s.SESSION_COOKIE_SECURE, "
    "s.DATABASES['default']['ENGINE'])"
)


def shown(done: subprocess.CompletedProcess) -> list[str]:
    """The values SHOW_SETTINGS printed (shell's own lines come before them)."""
    return done.stdout.splitlines()[-1].split()


def test_help_on_a_fresh_checkout_lists_our_commands():
    done = manage("help", **FRESH)
    assert done.returncode == 0, done.stderr
    # Settings that fail to load leave Django's core commands only, with this note.
    assert "only Django core commands are listed" not in done.stdout + done.stderr
    for command in OUR_COMMANDS:
        assert f"    {command}\n" in done.stdout, command
    # A command is not a server: the start-up warnings are the server's to print.
    assert "REDIS_URL is not set" not in done.stderr


def test_a_fresh_checkout_runs_the_local_settings_and_says_so():
    done = manage("shell", "-c", SHOW_SETTINGS, **FRESH)
    assert done.returncode == 0, done.stderr
    module, debug, key, secure_cookie, engine = shown(done)
    assert (module, debug) == ("emergence.settings_local", "True")
    assert secure_cookie == "False"  # the login works over plain http
    assert key.startswith("django-insecure-local-development-only")
    assert engine == "django.db.backends.sqlite3"
    [warning] = [line for line in done.stderr.splitlines() if "WARNING" in line]
    assert "local development settings (emergence.settings_local" in warning
    assert "DJANGO_SETTINGS_MODULE=emergence.settings" in warning


def test_local_settings_take_a_given_key_and_stay_debug():
    env = {**FRESH, "SECRET_KEY": "a-key-of-my-own-" + "x" * 40, "DEBUG": "0"}
    done = manage("shell", "-c", SHOW_SETTINGS, **env)
    assert done.returncode == 0, done.stderr
    assert shown(done)[1:3] == ["True", "a-key-of-my-own-" + "x" * 40]


def test_production_settings_without_a_key_explain_a_short_help():
    # Why `manage.py help` used to list only Django's commands on a fresh clone.
    done = manage("help", **{**FRESH, "DJANGO_SETTINGS_MODULE": "emergence.settings"})
    assert "only Django core commands are listed" in done.stdout + done.stderr
    assert "Set the SECRET_KEY environment variable" in done.stdout + done.stderr
    assert "local development settings (" not in done.stderr


def test_the_server_entry_keeps_the_production_settings():
    # What `python -m emergence.server ... emergence.asgi:application` loads.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(STRIPPED_PREFIXES) and k not in STRIPPED and k not in FRESH
    }
    done = subprocess.run(
        [sys.executable, "-c", "import emergence.asgi"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "Set the SECRET_KEY environment variable" in done.stderr
