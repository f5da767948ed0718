"""The test run's settings: emergence.settings_test, chosen by pyproject.toml."""

from django.conf import settings
from django.db import connection

from emergence import settings_base


def test_the_test_run_loads_the_test_settings():
    assert settings.SETTINGS_MODULE == "emergence.settings_test"
    assert settings.SECRET_KEY.startswith("test-only-")
    assert settings.JWT_SECRET == settings.SECRET_KEY


def test_it_runs_on_the_test_services_under_keys_of_its_own():
    assert settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
    assert settings.DATABASES["default"]["OPTIONS"]["pool"]["timeout"] == 1.0
    # As production binds: the suite runs every query as the servers send it.
    assert connection.features.uses_server_side_binding
    assert settings.CACHES["default"]["LOCATION"] == settings.REDIS_URL
    layer = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    assert layer["hosts"][0]["address"] == settings.REDIS_URL
    prefixes = {
        layer["prefix"],
        settings.CACHES["default"]["KEY_PREFIX"],
        settings.SHARED_KEY_PREFIX,
    }
    assert prefixes == {"emergence-test"}


def test_only_the_storage_and_log_queue_differ_from_production():
    static = "django.contrib.staticfiles.storage.StaticFilesStorage"
    assert settings.STORAGES["staticfiles"]["BACKEND"] == static
    assert settings_base.STORAGES["staticfiles"]["BACKEND"] != static
    assert settings.STORAGES["default"] == settings_base.STORAGES["default"]
    assert settings.LOG_QUEUE is False
    assert settings.LOGGING == settings_base.LOGGING


def test_the_builders_follow_the_url():
    assert settings_base.channel_layer_settings("", "x") == {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    }
    assert settings_base.cache_settings("", "x")["default"]["BACKEND"].endswith(
        "LocMemCache"
    )
    sqlite = settings_base.database_settings("sqlite:////tmp/x.sqlite3")
    assert "pool" not in sqlite.get("OPTIONS", {})
    assert sqlite["CONN_MAX_AGE"] == settings_base.CONN_MAX_AGE
    assert "server_side_binding" not in sqlite.get("OPTIONS", {})
    postgres = settings_base.database_settings("postgres://u@db:5432/x")
    assert postgres["OPTIONS"]["server_side_binding"] is True
