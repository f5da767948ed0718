"""Failed-login throttle (POST /api/token, /login/), shared by every instance.

Failures are counted per username and per client address in Django's cache, which is
Redis (RedisCache) whenever REDIS_URL is set, so every instance sees the same counts.
LOGIN_THROTTLE_USER_FAILURES (or LOGIN_THROTTLE_ADDRESS_FAILURES) failures within
LOGIN_THROTTLE_WINDOW_SECONDS of the first one lock that username (or address) out
for one window from the last failure: every attempt then gets 429 with Retry-After,
right password or not, and is not checked. A success clears the username's count.

The cache failing never locks anyone out: the throttle is skipped (fails open) and
that is logged, so logins keep working while Redis is down.
"""

import hashlib
import logging
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

CACHE_ERRORS = (RedisError, OSError)
LOGGED_USERNAME_CHARS = 150


@dataclass(frozen=True)
class Throttled:
    """A refused attempt: which limit (`user` or `address`) and for how long."""

    scope: str
    retry_after: int


def client_address(request: HttpRequest) -> str:
    """The caller's address (behind a proxy: Daphne's --proxy-headers sets it)."""
    return request.META.get("REMOTE_ADDR") or "unknown"


def _key(kind: str, scope: str, value: str) -> str:
    digest = hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:40]
    return f"login-throttle:{kind}:{scope}:{digest}"


def _limits(*, username: str, address: str) -> list[tuple[str, str, int]]:
    """(scope, value, limit) of every limit that applies."""
    limits = [
        ("user", username, settings.LOGIN_THROTTLE_USER_FAILURES),
        ("address", address, settings.LOGIN_THROTTLE_ADDRESS_FAILURES),
    ]
    return [(scope, value, limit) for scope, value, limit in limits if value and limit]


def _shown(username: str) -> str:
    return username[:LOGGED_USERNAME_CHARS]


def _unavailable(action: str, exc: Exception) -> None:
    logger.warning(
        "login_throttle_unavailable action=%s error=%s",
        action,
        exc,
        extra={"event": "login_throttle_unavailable", "action": action},
    )


def login_throttle_check(
    *, username: str, address: str, endpoint: str
) -> Throttled | None:
    """None when the attempt may go ahead; else the lockout (logged login_throttled)."""
    limits = _limits(username=username, address=address)
    keys = {scope: _key("block", scope, value) for scope, value, _ in limits}
    try:
        blocked = cache.get_many(list(keys.values()))
    except CACHE_ERRORS as exc:
        _unavailable("check", exc)
        return None
    now = time.time()
    for scope, key in keys.items():
        until = blocked.get(key)
        if isinstance(until, int | float) and until > now:
            throttled = Throttled(
                scope=scope, retry_after=max(1, math.ceil(until - now))
            )
            logger.warning(
                "login_throttled endpoint=%s user=%r client=%s scope=%s retry_after=%d",
                endpoint,
                _shown(username),
                address,
                scope,
                throttled.retry_after,
                extra={
                    "event": "login_throttled",
                    "endpoint": endpoint,
                    "user": _shown(username),
                    "client": address,
                    "scope": scope,
                    "retry_after": throttled.retry_after,
                },
            )
            return throttled
    return None


def _count_failure(scope: str, value: str, limit: int, window: int) -> int:
    key = _key("fail", scope, value)
    cache.add(key, 0, timeout=window)
    try:
        failures = cache.incr(key)
    except ValueError:  # expired between add() and incr()
        cache.set(key, 1, timeout=window)
        failures = 1
    if failures >= limit:
        cache.set(_key("block", scope, value), time.time() + window, timeout=window)
    return failures


def login_failure_record(*, username: str, address: str, endpoint: str) -> None:
    """Count a failed login for the username and the address; log login_failed."""
    window = settings.LOGIN_THROTTLE_WINDOW_SECONDS
    failures: dict[str, int] = {}
    try:
        for scope, value, limit in _limits(username=username, address=address):
            failures[scope] = _count_failure(scope, value, limit, window)
    except CACHE_ERRORS as exc:
        _unavailable("record", exc)
    logger.warning(
        "login_failed endpoint=%s user=%r client=%s user_failures=%s "
        "address_failures=%s",
        endpoint,
        _shown(username),
        address,
        failures.get("user", "-"),
        failures.get("address", "-"),
        extra={
            "event": "login_failed",
            "endpoint": endpoint,
            "user": _shown(username),
            "client": address,
            "user_failures": failures.get("user"),
            "address_failures": failures.get("address"),
        },
    )


def login_success_record(*, username: str) -> None:
    """A successful login clears the username's failure count."""
    try:
        cache.delete(_key("fail", "user", username))
    except CACHE_ERRORS as exc:
        _unavailable("success", exc)
