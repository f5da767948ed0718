"""psycopg_pool's backoff, capped: a pool must refill as soon as PostgreSQL answers.

psycopg_pool backs off exponentially from 1 s, with no upper bound but its
`reconnect_timeout` (5 min), in two places: between connection attempts after a
failed connect, and between health checks of pooled connections that turned out
dead (psycopg/psycopg#711). Both hurt a chat server:

- after PostgreSQL restarts, a slot whose attempts failed 1, 2, 4, 8 s apart
  connects seconds after the server is back, and every socket waits for it;
- after backends are terminated (failover, `pg_terminate_backend`), a checkout
  that draws two dead connections sleeps the whole pool timeout and fails, while
  the server is up (measured by bench/faults.py: 68 % connect success under
  repeated terminations, recovery 3-26 s after they stopped).

The first delay and the cap here keep both under half a second. Failed connects
are cheap (refused at once, or bounded by DB_CONNECT_TIMEOUT) and made by the
pool's few worker threads, so trying more often costs the database nothing.

AttemptWithBackoff is private to psycopg_pool: guard.py checks the release series
and the class's shape before the swap.
"""

import functools
from typing import Any

from django.conf import settings

from emergence.compat import guard

# The psycopg-pool releases this patch was written for.
SERIES = "3.3"


@functools.cache
def capped_backoff() -> type:
    """CappedBackoff: psycopg_pool's AttemptWithBackoff, made once on first use."""
    from psycopg_pool import base

    class CappedBackoff(base.AttemptWithBackoff):
        """psycopg_pool's attempt backoff with a small first delay and a ceiling."""

        emergence_patched = True
        INITIAL_DELAY = settings.DB_POOL_BACKOFF_INITIAL
        DELAY_BACKOFF = 2.0

        def update_delay(self, now: float) -> None:
            super().update_delay(now)
            self.delay = min(self.delay, settings.DB_POOL_BACKOFF_MAX)

    return CappedBackoff


def __getattr__(name: str) -> Any:
    # CappedBackoff is made on first use, not at import: a psycopg_pool without
    # AttemptWithBackoff then fails in the guard, with its message (PEP 562).
    if name == "CappedBackoff":
        return capped_backoff()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def apply() -> None:
    """Make the sync pool (the one Django uses) back off with CappedBackoff, once."""
    try:
        from psycopg_pool import base, pool
    except ImportError:  # no pool installed: Django cannot use one either
        return
    check_targets(base, pool)
    if getattr(pool.AttemptWithBackoff, "emergence_patched", False):
        return
    if not guard.version_matches("psycopg-pool", SERIES, __name__):
        return
    pool.AttemptWithBackoff = capped_backoff()


def check_targets(base: Any, pool: Any) -> None:
    """The class the patch derives from and the name it replaces, as expected."""
    upstream = guard.require(base, "AttemptWithBackoff", patch=__name__, kind=object)
    guard.require(upstream, "INITIAL_DELAY", patch=__name__)
    guard.require(upstream, "DELAY_BACKOFF", patch=__name__)
    guard.require(upstream, "update_delay", patch=__name__, parameters=("self", "now"))
    # ConnectionPool looks the class up in its own module at each use.
    guard.require(pool, "AttemptWithBackoff", patch=__name__, kind=upstream)
