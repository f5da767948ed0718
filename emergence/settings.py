"""Production settings (and `make run`'s, with DEBUG=1): the common ones and secrets.

Every other value is read in emergence/settings_base.py; the test run loads
emergence/settings_test.py instead of this module.
"""

from emergence.settings_base import *  # noqa: F403
from emergence.settings_base import DEBUG, env

# No secret default outside DEBUG: without SECRET_KEY these settings refuse to load.
if DEBUG:
    SECRET_KEY = env.str(
        "SECRET_KEY", default="insecure-dev-only-key-change-me-0123456789abcdef"
    )
else:
    SECRET_KEY = env.str("SECRET_KEY")
JWT_SECRET = env.str("JWT_SECRET", default=SECRET_KEY)
