"""Settings of the bare Channels echo baseline: Channels with none of our code."""

import os

from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Bench only: the app signs nothing, but Django refuses to start without a key.
SECRET_KEY = os.environ.get("SECRET_KEY", "bench-echo-insecure-key-0123456789abcdef")
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["channels"]
# No database: the echo app never touches one.
DATABASES = {}
USE_TZ = True

REDIS_URL = os.environ.get("REDIS_URL", "")
CHANNEL_LAYER_KIND = os.environ.get("CHANNEL_LAYER", "pubsub")
CHANNEL_LAYER_PREFIX = os.environ.get("CHANNEL_LAYER_PREFIX", "bench-echo")
# The host options mirror emergence/settings.py (same env names and defaults) so
# both sides talk to Redis the same way; copied, not imported, to keep this app
# free of Emergence code.
_layer_host = {
    "address": REDIS_URL,
    "socket_timeout": float(os.environ.get("CHANNEL_LAYER_SOCKET_TIMEOUT", "15.0")),
    "max_connections": int(os.environ.get("CHANNEL_LAYER_MAX_CONNECTIONS", "1000")),
    "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=3),
    "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    "health_check_interval": 10,
}
if REDIS_URL and CHANNEL_LAYER_KIND == "pubsub":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [_layer_host], "prefix": CHANNEL_LAYER_PREFIX},
        }
    }
elif REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [_layer_host],
                "capacity": int(os.environ.get("CHANNEL_LAYER_CAPACITY", "1000")),
                "expiry": 60,
                "group_expiry": 86400,
                "prefix": CHANNEL_LAYER_PREFIX,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
