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
"""

from django.conf import settings
from psycopg_pool import base, pool


class CappedBackoff(base.AttemptWithBackoff):
    """psycopg_pool's attempt backoff with a small first delay and a ceiling."""

    INITIAL_DELAY = settings.DB_POOL_BACKOFF_INITIAL
    DELAY_BACKOFF = 2.0

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, settings.DB_POOL_BACKOFF_MAX)


def apply() -> None:
    """Make the sync pool (the one Django uses) back off with CappedBackoff."""
    pool.AttemptWithBackoff = CappedBackoff
