"""Every patch to third-party code, in one place (see each module for why).

Each patch checks, before it patches, that its targets still have the shape it
expects and that the installed release is the one it was written for (guard.py).
"""

from emergence.compat import daphne, psycopg_pool


def apply() -> None:
    """Apply every patch; each is a no-op when already applied."""
    psycopg_pool.apply()
    daphne.apply()
