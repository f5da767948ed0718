"""Settings common to production (emergence.settings) and tests (settings_test).

Every external value but the secrets is read here, once, from the environment. The
secrets are not: production settings refuse to load without SECRET_KEY (outside
DEBUG), and the test settings must load without it.
"""

import ipaddress
import os
import socket
from pathlib import Path
from typing import Any

import environ
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# Name of this process in logs and frames; unique per Daphne process by default.
INSTANCE_ID = env.str("INSTANCE_ID", default=f"{socket.gethostname()}-{os.getpid()}")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "emergence.apps.EmergenceConfig",
    "ops",
    "accounts",
    "realtime",
    "sessions_app",
    "chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # HTML pages get a Content-Security-Policy; input no view could store is
    # refused (400/413) before static files, the DB check or a session lookup.
    "ops.csp.ContentSecurityPolicyMiddleware",
    "ops.http_edge.HttpEdgeMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "ops.middleware.DatabaseHealthMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "emergence.urls"
ASGI_APPLICATION = "emergence.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------
# Default: a SQLite file, for the embedded single-process mode. The test suite runs on
# real PostgreSQL and Redis (emergence/settings_test.py).
DATABASE_URL = env.str("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
# Health checks: a connection is tested before reuse. With the pool this becomes the
# pool's `check` (ConnectionPool.check_connection on every checkout): a terminated
# backend is discarded instead of failing a query, and the next pooled connection is
# tried after psycopg_pool's backoff, which emergence/compat/psycopg_pool.py caps
# (the library's 1 s first delay outlasted DB_POOL_TIMEOUT: every checkout that
# met two dead connections failed). Measured in tests/faults/test_database.py.
CONN_HEALTH_CHECKS = env.bool("CONN_HEALTH_CHECKS", default=True)
DB_POOL = env.bool("DB_POOL", default=True)
DB_POOL_MIN_SIZE = env.int("DB_POOL_MIN_SIZE", default=2)
DB_POOL_MAX_SIZE = env.int("DB_POOL_MAX_SIZE", default=10)
DB_POOL_TIMEOUT = env.float("DB_POOL_TIMEOUT", default=1.0)
CONN_MAX_AGE = env.int("CONN_MAX_AGE", default=0)
DB_CONNECT_TIMEOUT = env.int("DB_CONNECT_TIMEOUT", default=2)
# PostgreSQL parameters sent apart from the statement (psycopg 3's server-side
# binding) instead of quoted into it in Python: less of the connect path's CPU under
# the GIL. Prepared statements stay off (Django's default), so poolers such as
# PgBouncer in transaction mode keep working.
# https://docs.djangoproject.com/en/5.2/ref/databases/#server-side-parameters-binding
DB_SERVER_SIDE_BINDING = env.bool("DB_SERVER_SIDE_BINDING", default=True)


def database_settings(url: str) -> dict[str, Any]:
    """DATABASES["default"] for a database URL, with the pool and timeouts above."""
    db = environ.Env.db_url_config(url)
    db["CONN_HEALTH_CHECKS"] = CONN_HEALTH_CHECKS
    postgresql = db["ENGINE"] == "django.db.backends.postgresql"
    if postgresql and DB_POOL:
        # Persistent connections (CONN_MAX_AGE > 0) are per thread, and under ASGI
        # database_sync_to_async work runs on threads that come and go, so
        # connections leak or go stale (Django docs, "Persistent connections" / ASGI
        # note). psycopg 3's pool is shared by every thread of the process, so we
        # use it and keep CONN_MAX_AGE at 0 (Django refuses both together). The pool
        # timeout is short: our retry helper (ops/db.py) owns waiting and backoff.
        db["CONN_MAX_AGE"] = 0
        db.setdefault("OPTIONS", {})["pool"] = {
            "min_size": DB_POOL_MIN_SIZE,
            "max_size": DB_POOL_MAX_SIZE,
            "timeout": DB_POOL_TIMEOUT,
        }
    else:
        # Without the pool (SQLite, or DB_POOL=false): CONN_MAX_AGE from the
        # environment, default 0 (a connection per unit of work), same ASGI reason.
        db["CONN_MAX_AGE"] = CONN_MAX_AGE
    if postgresql:
        # Fail fast instead of hanging on an unreachable server; retries wait.
        db.setdefault("OPTIONS", {}).setdefault("connect_timeout", DB_CONNECT_TIMEOUT)
        db["OPTIONS"].setdefault("server_side_binding", DB_SERVER_SIDE_BINDING)
    return db


DATABASES = {"default": database_settings(DATABASE_URL)}

# psycopg_pool's reconnect and dead-connection backoff: first delay and ceiling, in
# seconds (emergence/compat/psycopg_pool.py says why the library's 1 s doubling
# is too slow).
DB_POOL_BACKOFF_INITIAL = env.float("DB_POOL_BACKOFF_INITIAL", default=0.05)
DB_POOL_BACKOFF_MAX = env.float("DB_POOL_BACKOFF_MAX", default=0.5)
# Threads that run ORM work for sockets (ops/db.py): one per pooled
# connection, so neither waits on the other.
DB_THREADS = env.int("DB_THREADS", default=DB_POOL_MAX_SIZE)
DB_MAX_RETRIES = env.int("DB_MAX_RETRIES", default=3)
DB_RETRY_DELAY = env.float("DB_RETRY_DELAY", default=0.5)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer and cache -----------------------------------------------
# Unset: in-memory channel layer and local cache, single process only.
REDIS_URL = env.str("REDIS_URL", default="")
# Reconnect-and-retry for the asyncio Redis clients (channel layer, shared state);
# redis.asyncio needs its own Retry class: the sync one silently never retries.
REDIS_RETRY_OPTIONS = {
    "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=3),
    "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    "health_check_interval": 10,
}
CHANNEL_LAYER_PREFIX = env.str("CHANNEL_LAYER_PREFIX", default="emergence")
CACHE_KEY_PREFIX = env.str("CACHE_KEY_PREFIX", default="emergence")
# Which channels_redis layer: "pubsub" (RedisPubSubChannelLayer, default, with its
# Redis commands batched by realtime.layer) or "core" (RedisChannelLayer). Why
# pubsub (the fan-out figure of bench/RESULTS.md): a group send is one PUBLISH per
# instance, not one list push per socket, so fan-out cost grows with instances, not
# sockets (1,000 sockets: last receiver 325 ms vs 673 ms on this box); and on a
# Redis restart its sockets stay open (core's receive loop dies, so every socket is
# closed 1013 and resumes). Messages published during the outage
# are filled in from the DB by seq (chat_sync after recovery, gap fill on the next
# message). The consumer, cluster and Redis-fault tests pass with either layer
# (CHANNEL_LAYER=core).
CHANNEL_LAYER_KIND = env.str("CHANNEL_LAYER", default="pubsub")
# redis-py 8 reads with a 5 s socket timeout by default, exactly channels_redis'
# BZPOPMIN block (5 s): every channel idle for 5 s then raised TimeoutError and
# killed its socket with 1011. Reads must outlast the blocking pop.
CHANNEL_LAYER_SOCKET_TIMEOUT = env.float("CHANNEL_LAYER_SOCKET_TIMEOUT", default=15.0)
# redis-py 8 pools refuse past 100 connections ("Too many connections"): a storm of
# 300 closing sockets, each doing a group_discard, hit it.
CHANNEL_LAYER_MAX_CONNECTIONS = env.int("CHANNEL_LAYER_MAX_CONNECTIONS", default=1000)
CHANNEL_LAYER_CAPACITY = env.int("CHANNEL_LAYER_CAPACITY", default=1000)


def channel_layer_settings(redis_url: str, prefix: str) -> dict[str, Any]:
    """CHANNEL_LAYERS on this Redis (in memory without one), keys under `prefix`."""
    if not redis_url:
        return {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    host = {
        "address": redis_url,
        "socket_timeout": CHANNEL_LAYER_SOCKET_TIMEOUT,
        "max_connections": CHANNEL_LAYER_MAX_CONNECTIONS,
        # After a Redis restart pooled connections are dead: retry a command on a
        # fresh connection instead of failing it (channels_redis#256, #406).
        # Duplicates are harmless: a socket drops any seq it has already sent.
        **REDIS_RETRY_OPTIONS,
    }
    if CHANNEL_LAYER_KIND == "pubsub":
        return {
            "default": {
                "BACKEND": "realtime.layer.BatchedPubSubChannelLayer",
                "CONFIG": {"hosts": [host], "prefix": prefix},
            }
        }
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [host],
                "capacity": CHANNEL_LAYER_CAPACITY,
                "expiry": 60,
                "group_expiry": 86400,
                "prefix": prefix,
            },
        }
    }


def cache_settings(redis_url: str, prefix: str) -> dict[str, Any]:
    """CACHES on this Redis (a local-memory cache without one), keys under `prefix`."""
    if not redis_url:
        return {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": prefix,
            "OPTIONS": {"socket_timeout": 1, "socket_connect_timeout": 1},
        }
    }


CHANNEL_LAYERS = channel_layer_settings(REDIS_URL, CHANNEL_LAYER_PREFIX)
CACHES = cache_settings(REDIS_URL, CACHE_KEY_PREFIX)

# --- WebSocket behaviour (PROTOCOL.md §2) -----------------------------------------
WS_CLEANUP_GRACE_SECONDS = env.float("WS_CLEANUP_GRACE_SECONDS", default=5.0)
WS_MAX_MESSAGE_BYTES = env.int("WS_MAX_MESSAGE_BYTES", default=65536)
WS_MAX_REPLAY = env.int("WS_MAX_REPLAY", default=1000)
WS_RATE_LIMIT = env.float("WS_RATE_LIMIT", default=20.0)
WS_RATE_LIMIT_CLOSE_AFTER = env.int("WS_RATE_LIMIT_CLOSE_AFTER", default=100)
# Per user, across all of their sockets on every instance (realtime/limits.py).
WS_MAX_SOCKETS_PER_USER = env.int("WS_MAX_SOCKETS_PER_USER", default=20)
WS_USER_RATE_LIMIT = env.float("WS_USER_RATE_LIMIT", default=40.0)
# New threads per user per hour, on connect or through POST /api/threads.
THREAD_CREATE_LIMIT = env.int("THREAD_CREATE_LIMIT", default=20)
# Bytes held in the process for a socket that does not read; over it: close 4408
# (emergence/compat/daphne_frames.py).
WS_MAX_PENDING_BYTES = env.int("WS_MAX_PENDING_BYTES", default=1024 * 1024)
WS_FREQUENT_DISCONNECTS = env.int("WS_FREQUENT_DISCONNECTS", default=5)
WS_FREQUENT_WINDOW_SECONDS = env.int("WS_FREQUENT_WINDOW_SECONDS", default=300)
# Connects in progress at once per process (ops/admission.py); more are refused
# with `overloaded` and 1013 (PROTOCOL.md §2.11, which says why 32: the fewest in
# progress at which one process's measured connect rate peaks). 0 admits all.
WS_MAX_CONNECTING = env.int("WS_MAX_CONNECTING", default=32)
# A connect over it waits this long for a slot first, when the line ahead clears
# in that time (ops/admission.py; PROTOCOL.md 2.11 says why 5 s); 0 refuses at once.
WS_ADMISSION_WAIT_MS = env.int("WS_ADMISSION_WAIT_MS", default=5000)
# SIGTERM closes the sockets with 1012 in batches spread over this many seconds
# (emergence/drain.py); kept below --application-close-timeout.
WS_DRAIN_SECONDS = env.float("WS_DRAIN_SECONDS", default=10.0)

# Presence entries live this long unless their process refreshes them (a dead
# instance's sockets vanish from presence after at most this).
PRESENCE_TTL_SECONDS = env.int("PRESENCE_TTL_SECONDS", default=60)
PRESENCE_REFRESH_SECONDS = env.float("PRESENCE_REFRESH_SECONDS", default=20.0)
# Periodic sweep finishing cleanups of dead instances (0 = off; `reap_sessions`
# does the same once). On by default: without it a SIGTERMed instance's leaves
# would wait for an operator.
REAPER_INTERVAL_SECONDS = env.float("REAPER_INTERVAL_SECONDS", default=30.0)

# /metrics answers only these client networks (empty list: anyone).
METRICS_ALLOWED_NETWORKS = [
    ipaddress.ip_network(n)
    for n in env.list(
        "METRICS_ALLOWED_NETWORKS",
        default=[
            "127.0.0.0/8",
            "::1/128",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
        ],
    )
]

# --- Auth -------------------------------------------------------------------------
# JWT_SECRET (default: SECRET_KEY) is set beside SECRET_KEY: emergence/settings.py.
JWT_TTL_SECONDS = env.int("JWT_TTL_SECONDS", default=3600)
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

_PASSWORD_VALIDATION = "django.contrib.auth.password_validation."
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": _PASSWORD_VALIDATION + "UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Static files -----------------------------------------------------------------
STATIC_URL = "static/"
# Overridable so that tests can collect into a directory of their own.
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Logging ----------------------------------------------------------------------
LOG_FORMAT = env.str("LOG_FORMAT", default="text")
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# Daphne's access log (python -m emergence.server): logger daphne.access, INFO.
ACCESS_LOG = env.bool("ACCESS_LOG", default=True)
# The server (python -m emergence.server) has records formatted and written by a
# thread, off its event loop (ops/logs.py); commands log synchronously whatever
# this says. LOG_QUEUE=false keeps the server synchronous too.
LOG_QUEUE = env.bool("LOG_QUEUE", default=True)
# Python warnings go through logging too (logger py.warnings): JSON like the rest.
LOGGING_CONFIG = "ops.logs.configure"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "instance": {"()": "ops.logs.InstanceFilter"},
        # A Redis outage is one WARNING stream, not an ERROR flood (ops/logs.py).
        "redis_outage": {"()": "ops.logs.RedisOutageFilter"},
        # A client's bad request (foreign Host, body over the limit) is a WARNING.
        "client_errors": {"()": "ops.logs.ClientErrorFilter"},
    },
    "formatters": {
        "text": {
            "format": "%(asctime)s %(levelname)s %(name)s [%(instance)s] %(message)s",
        },
        "json": {
            "()": "ops.logs.JsonFormatter",
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "text",
            "filters": ["instance", "redis_outage", "client_errors"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"level": "INFO"},
        "django.db.backends": {"level": "INFO"},
        # The pool logs every discarded broken connection; our retry helper reports
        # the outcome that matters (db_connection_lost / db_reconnected).
        "psycopg.pool": {"level": "WARNING"},
        "daphne.access": {"level": "INFO" if ACCESS_LOG else "WARNING"},
    },
}

# Connections of this process's shared-state client (presence, metrics); callers
# queue for one rather than fail.
SHARED_REDIS_MAX_CONNECTIONS = env.int("SHARED_REDIS_MAX_CONNECTIONS", default=50)

# Prefix of the shared state keys (presence, detach markers, disconnect metrics).
SHARED_KEY_PREFIX = env.str("SHARED_KEY_PREFIX", default="emergence")

# --- Operations -------------------------------------------------------------------
# HTTPS hardening, checked by `manage.py check --deploy`. TLS ends at the proxy
# (deploy/nginx.conf, an ingress), and Daphne runs with --proxy-headers behind it, so
# request.is_secure() follows the proxy's X-Forwarded-Proto. With DEBUG off the
# defaults are production's; over plain http (the test Daphnes on loopback) secure
# cookies are merely not sent back by browsers and HSTS is never emitted (Django
# sends it on secure requests only), so nothing breaks there.
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool(
    "SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False
)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
# Off by default: the proxy redirects http to https, and Daphne must answer plain http
# to health probes (kubelet, Docker HEALTHCHECK) and the /metrics scraper, which a
# redirect would break.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SILENCED_SYSTEM_CHECKS: list[str] = []
if not SECURE_SSL_REDIRECT:
    # security.W008 (no SECURE_SSL_REDIRECT): the proxy owns the http->https redirect
    # (deploy/nginx.conf); see above for why Daphne itself must not redirect.
    SILENCED_SYSTEM_CHECKS.append("security.W008")
if SECURE_HSTS_SECONDS and not SECURE_HSTS_INCLUDE_SUBDOMAINS:
    # security.W005 (HSTS without includeSubDomains): it would pin every host under
    # this one to https for a year; an operator's decision, never a default.
    SILENCED_SYSTEM_CHECKS.append("security.W005")
if SECURE_HSTS_SECONDS and not SECURE_HSTS_PRELOAD:
    # security.W021 (HSTS without preload): preloading is a commitment made for the
    # whole registrable domain through hstspreload.org, not by this app.
    SILENCED_SYSTEM_CHECKS.append("security.W021")

# Failed logins (POST /api/token, /login/), counted in the shared cache so every
# instance agrees: this many failures within the window lock the username (or the
# client address) out for one window; 0 disables that limit.
LOGIN_THROTTLE_USER_FAILURES = env.int("LOGIN_THROTTLE_USER_FAILURES", default=5)
LOGIN_THROTTLE_ADDRESS_FAILURES = env.int("LOGIN_THROTTLE_ADDRESS_FAILURES", default=20)
LOGIN_THROTTLE_WINDOW_SECONDS = env.int("LOGIN_THROTTLE_WINDOW_SECONDS", default=300)

# `manage.py log_report` verdicts (README, "Runbook"): CRITICAL at this many ERROR
# records or db_unavailable events (0 disables the rule); DEGRADED at this many ERROR
# records, WARNING records or db_connection_lost events.
LOG_REPORT_CRITICAL_ERRORS = env.int("LOG_REPORT_CRITICAL_ERRORS", default=10)
LOG_REPORT_CRITICAL_DB_UNAVAILABLE = env.int(
    "LOG_REPORT_CRITICAL_DB_UNAVAILABLE", default=1
)
LOG_REPORT_DEGRADED_ERRORS = env.int("LOG_REPORT_DEGRADED_ERRORS", default=1)
LOG_REPORT_DEGRADED_WARNINGS = env.int("LOG_REPORT_DEGRADED_WARNINGS", default=50)
LOG_REPORT_DEGRADED_DB_LOST = env.int("LOG_REPORT_DEGRADED_DB_LOST", default=5)
