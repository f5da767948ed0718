"""Test settings (pytest-django, pyproject.toml): the common ones on test services.

The test run uses real PostgreSQL and Redis (TEST_DATABASE_URL / TEST_REDIS_URL,
local by default) under keys of its own. Processes the tests start (Daphne,
manage.py) run the production settings, emergence.settings, with explicit variables.
"""

from emergence.settings_base import *  # noqa: F403
from emergence.settings_base import (
    STORAGES,
    cache_settings,
    channel_layer_settings,
    database_settings,
    env,
)

# Signs the test run's sessions and tokens; never valid anywhere else.
SECRET_KEY = "test-only-secret-key-0123456789abcdef-not-for-any-deployment"
JWT_SECRET = SECRET_KEY

DATABASE_URL = env.str(
    "TEST_DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/emergence"
)
REDIS_URL = env.str("TEST_REDIS_URL", default="redis://127.0.0.1:6379/0")
DATABASES = {"default": database_settings(DATABASE_URL)}

# Keys of its own: tests/conftest.py deletes everything under these prefixes.
CHANNEL_LAYER_PREFIX = "emergence-test"
CACHE_KEY_PREFIX = "emergence-test"
SHARED_KEY_PREFIX = "emergence-test"
CHANNEL_LAYERS = channel_layer_settings(REDIS_URL, CHANNEL_LAYER_PREFIX)
CACHES = cache_settings(REDIS_URL, CACHE_KEY_PREFIX)

# Pages render without collectstatic: no manifest of hashed names to look up.
STORAGES = {
    **STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Records written as they are logged, for caplog and capsys.
LOG_QUEUE = False
