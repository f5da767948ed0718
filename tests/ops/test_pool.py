"""psycopg_pool's backoff as emergence/compat/psycopg_pool.py configures it."""

from django.conf import settings
from psycopg_pool import pool

from emergence.compat.psycopg_pool import CappedBackoff


def test_the_pool_uses_the_capped_backoff():
    assert pool.AttemptWithBackoff is CappedBackoff


def test_delays_start_small_double_and_stop_at_the_cap():
    attempt = CappedBackoff(timeout=300.0)
    delays = []
    for _ in range(12):
        attempt.update_delay(1000.0)
        delays.append(attempt.delay)
    first = settings.DB_POOL_BACKOFF_INITIAL
    assert first * 0.9 <= delays[0] <= first * 1.1  # psycopg_pool's 10 % jitter
    assert delays[1] == delays[0] * 2
    assert max(delays) == settings.DB_POOL_BACKOFF_MAX
    assert delays[-1] == settings.DB_POOL_BACKOFF_MAX


def test_the_give_up_time_still_bounds_the_delay():
    attempt = CappedBackoff(timeout=0.01)
    attempt.update_delay(1000.0)
    assert attempt.delay <= 0.01
