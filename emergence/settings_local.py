"""Local development settings: manage.py's default and `make run`. Never production.

The common settings with DEBUG on and, unless SECRET_KEY is set, a development key
that says what it is. The production settings (emergence.settings) refuse that key
and DEBUG, so neither can reach a deployment through them. The server says it runs
on these settings once it listens (emergence/apps.py).
"""

import os

from django.core.checks.security.base import SECRET_KEY_INSECURE_PREFIX
from django.core.exceptions import ImproperlyConfigured

# Before the common settings read it: their local defaults (no HSTS, cookies over
# plain http) follow DEBUG, and these settings are DEBUG whatever the shell says.
os.environ["DEBUG"] = "1"

from emergence.settings_base import *  # noqa: E402, F403
from emergence.settings_base import DEBUG, env  # noqa: E402

if not DEBUG:  # the common settings were imported before this module set DEBUG
    raise ImproperlyConfigured("emergence.settings_base was loaded before DEBUG=1")

# Django's own marker of a development key: `check --deploy` flags it (W009) and
# emergence.settings refuses to load with it.
DEVELOPMENT_SECRET_KEY = (
    SECRET_KEY_INSECURE_PREFIX + "local-development-only-never-use-in-production"
)
SECRET_KEY = env.str("SECRET_KEY", default=DEVELOPMENT_SECRET_KEY)
JWT_SECRET = env.str("JWT_SECRET", default=SECRET_KEY)
