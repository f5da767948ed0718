"""The production settings refuse a JWT key an attacker could guess, and restore no
development key whatever else is set (a subprocess, as an operator runs it)."""

import secrets

import pytest

from tests.commands import manage

LONG_KEY = secrets.token_urlsafe(50)
SHOW_KEYS = (
    "from django.conf import settings as s; "
    "print(s.JWT_SECRET == s.SECRET_KEY, "
    "s.SECRET_KEY.startswith(('django-insecure', 'insecure-dev-only')), "
    "s.JWT_SECRET.startswith(('django-insecure', 'insecure-dev-only')))"
)


@pytest.mark.parametrize(
    "env",
    [
        {"SECRET_KEY": LONG_KEY, "JWT_SECRET": "j" * 31},
        # JWT_SECRET defaults to SECRET_KEY: a short one alone refuses as well.
        {"SECRET_KEY": "s" * 31, "JWT_SECRET": None},
        # Bytes, not characters: 16 two-byte characters are enough, 15 are not.
        {"SECRET_KEY": LONG_KEY, "JWT_SECRET": "é" * 15},
    ],
)
def test_a_jwt_secret_under_32_bytes_refuses_to_load(env):
    done = manage("check", **env)
    assert done.returncode != 0
    assert "ImproperlyConfigured: JWT_SECRET is shorter than 32 bytes" in done.stderr


@pytest.mark.parametrize(
    "env",
    [
        {"SECRET_KEY": "s" * 31, "JWT_SECRET": "j" * 32},
        {"SECRET_KEY": LONG_KEY, "JWT_SECRET": "é" * 16},
    ],
)
def test_a_jwt_secret_of_32_bytes_loads(env):
    done = manage("check", **env)
    assert done.returncode == 0, done.stderr


def test_a_development_jwt_secret_is_refused():
    key = "django-insecure-local-development-only-never-use-in-production"
    done = manage("check", SECRET_KEY=LONG_KEY, JWT_SECRET=key)
    assert done.returncode != 0
    assert "ImproperlyConfigured: JWT_SECRET is a development key" in done.stderr


def test_production_keys_are_the_operators_own():
    done = manage("shell", "-c", SHOW_KEYS, SECRET_KEY=LONG_KEY, JWT_SECRET=None)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-3:] == ["True", "False", "False"]
