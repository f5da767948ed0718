"""Health endpoints: liveness, readiness and /api/health (PROTOCOL.md §1)."""

import socket
import time

import pytest
from django.conf import settings as django_settings

pytestmark = pytest.mark.filterwarnings("ignore:No directory at:UserWarning")

COMPONENTS = {"database", "channel_layer", "cache"}


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never answers (a hung Redis)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield server.getsockname()[1]
    server.close()


@pytest.fixture
def closed_port():
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def redis_cache(url: str, timeout: float = 1) -> dict:
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"socket_timeout": timeout, "socket_connect_timeout": timeout},
        }
    }


# --- liveness -----------------------------------------------------------------------


@pytest.mark.django_db
def test_liveness(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/health/liveness")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "alive"
    assert body["instance"] == django_settings.INSTANCE_ID
    assert isinstance(body["uptime_s"], (int, float)) and body["uptime_s"] >= 0


def test_liveness_touches_neither_database_nor_redis(client, settings, closed_port):
    # No django_db mark: pytest-django refuses a database connection in any thread,
    # so a query (or the HTTP DB-health ping) anywhere would make this a 500.
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port}/0"
    settings.CACHES = redis_cache(f"redis://127.0.0.1:{closed_port}/0")
    started = time.monotonic()
    response = client.get("/health/liveness")
    assert response.status_code == 200
    assert response.json()["status"] == "alive"
    assert time.monotonic() - started < 0.5


def test_liveness_answers_while_the_database_is_down(client, db_outage):
    db_outage.start()
    started = time.monotonic()
    response = client.get("/health/liveness")
    assert response.status_code == 200
    assert time.monotonic() - started < 0.5


def test_api_health(client):
    response = client.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert isinstance(body["message"], str) and body["message"]


def test_api_health_answers_while_the_database_is_down(client, db_outage):
    db_outage.start()
    assert client.get("/api/health").status_code == 200


# --- readiness ----------------------------------------------------------------------


def assert_component(component: dict, status: str) -> None:
    assert component["status"] == status
    assert isinstance(component["latency_ms"], float)
    assert 0 <= component["latency_ms"] < 2000
    if status == "down":
        assert isinstance(component["error"], str) and component["error"]


@pytest.mark.django_db
def test_readiness_all_up(client):
    response = client.get("/health/readiness")
    assert response.status_code == 200
    body = response.json()
    assert body["overall"] == "up"
    assert set(body["components"]) == COMPONENTS
    for component in body["components"].values():
        assert_component(component, "up")
        assert "error" not in component


@pytest.mark.django_db
def test_readiness_draining_is_503_without_an_error_record(client, monkeypatch, caplog):
    from ops import health

    monkeypatch.setattr(health, "_draining", False)
    health.start_draining()  # what the graceful shutdown does (emergence/drain.py)
    response = client.get("/health/readiness")
    assert response.status_code == 503
    body = response.json()
    assert body["overall"] == "draining"
    assert set(body["components"]) == COMPONENTS
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


@pytest.mark.django_db
def test_readiness_cache_down(client, settings, closed_port):
    settings.CACHES = redis_cache(f"redis://127.0.0.1:{closed_port}/0")
    response = client.get("/health/readiness")
    assert response.status_code == 503
    body = response.json()
    assert body["overall"] == "down"
    assert_component(body["components"]["cache"], "down")
    assert_component(body["components"]["database"], "up")
    assert_component(body["components"]["channel_layer"], "up")


@pytest.mark.django_db
def test_readiness_channel_layer_down(client, settings, closed_port):
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port}/0"
    response = client.get("/health/readiness")
    assert response.status_code == 503
    body = response.json()
    assert body["overall"] == "down"
    assert_component(body["components"]["channel_layer"], "down")
    assert_component(body["components"]["database"], "up")
    assert_component(body["components"]["cache"], "up")


@pytest.mark.django_db
def test_readiness_database_down(client, db_outage):
    db_outage.start()
    started = time.monotonic()
    response = client.get("/health/readiness")
    assert time.monotonic() - started < 2.0
    assert response.status_code == 503
    body = response.json()
    assert body["overall"] == "down"
    assert_component(body["components"]["database"], "down")
    assert_component(body["components"]["cache"], "up")


@pytest.mark.django_db
def test_readiness_is_bounded_when_a_dependency_hangs(client, settings, silent_server):
    # A cache that accepts the connection and never answers, with a 10 s socket
    # timeout: the probe's own bound (and the 2 s budget) must cut it short.
    settings.CACHES = redis_cache(f"redis://127.0.0.1:{silent_server}/0", timeout=10)
    started = time.monotonic()
    response = client.get("/health/readiness")
    elapsed = time.monotonic() - started
    assert elapsed < 2.0
    assert response.status_code == 503
    cache = response.json()["components"]["cache"]
    assert cache["status"] == "down"
    assert "Timeout" in cache["error"]
    assert_component(response.json()["components"]["database"], "up")
