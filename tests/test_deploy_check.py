"""Production settings: `check --deploy` reports no issue, no secret, no start."""

import secrets
import subprocess

import pytest

from tests.commands import manage


def check_deploy(**env: str) -> subprocess.CompletedProcess:
    """`check --deploy`, failing on any message, with production variables."""
    production = {
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "chat.example.com",
        "DATABASE_URL": "postgres://emergence@db.internal:5432/emergence",
        "REDIS_URL": "redis://redis.internal:6379/0",
    }
    return manage("check", "--deploy", "--fail-level", "DEBUG", **{**production, **env})


def test_production_defaults_pass_with_three_documented_silences():
    done = check_deploy()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues (3 silenced)." in done.stdout


def test_an_operator_who_opts_in_needs_no_silence():
    done = check_deploy(
        SECURE_SSL_REDIRECT="1",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="1",
        SECURE_HSTS_PRELOAD="1",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues (0 silenced)." in done.stdout


@pytest.mark.parametrize(
    ("env", "check"),
    [
        ({"SESSION_COOKIE_SECURE": "0"}, "security.W012"),
        ({"CSRF_COOKIE_SECURE": "0"}, "security.W016"),
        ({"SECURE_HSTS_SECONDS": "0"}, "security.W004"),
        # A JWT_SECRET of its own: a short SECRET_KEY alone refuses to load.
        ({"SECRET_KEY": "short", "JWT_SECRET": "j" * 32}, "security.W009"),
    ],
)
def test_weakening_a_setting_is_reported(env, check):
    done = check_deploy(**env)
    assert done.returncode != 0
    assert check in done.stdout + done.stderr


@pytest.mark.parametrize("env", [{}, {"TESTING": "1"}, {"DEBUG": "0"}])
def test_without_a_secret_key_the_production_settings_refuse_to_load(env):
    done = manage("check", **{"DEBUG": None, **env, "SECRET_KEY": None})
    assert done.returncode != 0
    assert "ImproperlyConfigured: Set the SECRET_KEY environment variable" in (
        done.stderr
    )


def test_debug_restores_no_development_key():
    done = manage("check", DEBUG="1", SECRET_KEY=None)
    assert done.returncode != 0
    assert "ImproperlyConfigured: DEBUG is on with the production settings" in (
        done.stderr
    )


@pytest.mark.parametrize(
    "key",
    [
        "django-insecure-local-development-only-never-use-in-production",
        "django-insecure-" + secrets.token_urlsafe(50),
        "insecure-dev-only-key-change-me-0123456789abcdef",
    ],
)
def test_a_development_key_is_refused(key):
    done = manage("check", SECRET_KEY=key)
    assert done.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY is a development key" in done.stderr
