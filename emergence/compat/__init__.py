"""Every patch to third-party code, in one place (see each module for why).

Each patch checks, before it patches, that its targets still have the shape it
expects and that the installed release is the one it was written for (guard.py).
"""

from emergence.compat import (
    autobahn_debug,
    daphne,
    daphne_frames,
    psycopg_pool,
    twisted_http,
)


def apply() -> None:
    """Apply every patch; each is a no-op when already applied."""
    psycopg_pool.apply()
    daphne.apply()
    daphne_frames.apply()
    twisted_http.apply()
    autobahn_debug.apply()
