"""Every patch to third-party code, in one place (see each module for why)."""

from emergence.compat import daphne, psycopg_pool


def apply() -> None:
    """Apply every patch; each is a no-op when already applied."""
    psycopg_pool.apply()
    daphne.apply()
