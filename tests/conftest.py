"""Shared fixtures: real PostgreSQL and Redis, users, tokens, Daphne processes."""

import socket
from urllib.parse import urlparse

import pytest
import redis
from django.conf import settings

pytest_plugins = ["tests.fixtures"]


def _reachable(url: str, default_port: int) -> str | None:
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or default_port
    try:
        with socket.create_connection((host, port), timeout=2):
            return None
    except OSError as exc:
        return f"{host}:{port} ({exc})"


def pytest_sessionstart(session):
    """Fail at once, naming the service, when PostgreSQL or Redis is unreachable."""
    problems = []
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        problems.append("the test suite needs PostgreSQL (set TEST_DATABASE_URL)")
    else:
        err = _reachable(settings.DATABASE_URL, 5432)
        if err:
            problems.append(f"PostgreSQL unreachable at {err}; set TEST_DATABASE_URL")
    err = _reachable(settings.REDIS_URL, 6379)
    if err:
        problems.append(f"Redis unreachable at {err}; set TEST_REDIS_URL")
    if problems:
        pytest.exit("; ".join(problems), returncode=3)


@pytest.fixture(autouse=True)
def _isolated_redis():
    """Each test gets clean shared state (presence, metrics) in the test Redis."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    prefix = settings.SHARED_KEY_PREFIX
    layer_prefix = settings.CHANNEL_LAYER_PREFIX
    cache_prefix = settings.CACHES["default"].get("KEY_PREFIX", "")
    for pattern in (f"{prefix}:*", f"{layer_prefix}:*", f"{cache_prefix}:*"):
        keys = list(client.scan_iter(pattern, count=1000))
        if keys:
            client.delete(*keys)
    yield
    client.close()


@pytest.fixture
def password() -> str:
    return "s3cret-Passw0rd"


@pytest.fixture
def make_user(django_user_model, password):
    def make(username: str, **extra):
        return django_user_model.objects.create_user(
            username=username, password=password, **extra
        )

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def token_for():
    from accounts.tokens import token_issue

    def issue(user, ttl_seconds=None):
        return token_issue(
            user_id=user.pk, username=user.get_username(), ttl_seconds=ttl_seconds
        )

    return issue


@pytest.fixture
def daphne(transactional_db, tmp_path):
    """Start real Daphne processes (name, **env overrides); all stopped afterwards."""
    from bench.servers import started
    from tests.servers import DaphneProcess

    def make(name: str = "a", **env: str) -> DaphneProcess:
        return DaphneProcess(name, tmp_path, **env)

    with started(make) as start:
        yield start


def assert_no_errors(proc) -> None:
    """No ERROR record and no traceback anywhere in a Daphne process's log."""
    errors = [r for r in proc.records() if r.get("level") in ("ERROR", "CRITICAL")]
    assert not errors, errors
    assert "Traceback" not in proc.log_text(), proc.log_text()[-4000:]
