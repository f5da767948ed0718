"""Production settings: the common ones, the secrets, and DEBUG off.

Every other value is read in emergence/settings_base.py. Local development loads
emergence/settings_local.py instead (manage.py's default, `make run`); the test run
loads emergence/settings_test.py. Daphne (`python -m emergence.server`, `make
serve`, the Dockerfile) loads this module.
"""

from django.core.checks.security.base import SECRET_KEY_INSECURE_PREFIX
from django.core.exceptions import ImproperlyConfigured

from emergence.settings_base import *  # noqa: F403
from emergence.settings_base import DEBUG, env

LOCAL_HINT = (
    "for local development use emergence.settings_local (manage.py's default, "
    "`make run`)"
)

# DEBUG's error pages show settings such as DATABASE_URL and REDIS_URL with their
# passwords, and its cookies are not marked secure: never in production.
if DEBUG:
    raise ImproperlyConfigured(
        f"DEBUG is on with the production settings (emergence.settings); {LOCAL_HINT}"
    )

# No default, whatever else is set: without SECRET_KEY these settings refuse to load.
if not env.str("SECRET_KEY", default=""):
    raise ImproperlyConfigured(
        "Set the SECRET_KEY environment variable: the production settings "
        f"(emergence.settings) have no default; {LOCAL_HINT}"
    )
SECRET_KEY = env.str("SECRET_KEY")
# A development key (settings_local's, Django's generated ones, and the DEBUG
# default of earlier releases) must not sign production sessions and tokens.
if SECRET_KEY.startswith(SECRET_KEY_INSECURE_PREFIX) or SECRET_KEY.startswith(
    "insecure-dev-only-key"
):
    raise ImproperlyConfigured(
        "SECRET_KEY is a development key: set a random one for production, e.g. "
        "python3 -c 'import secrets; print(secrets.token_urlsafe(50))'"
    )
JWT_SECRET = env.str("JWT_SECRET", default=SECRET_KEY)
# HS256 wants a key at least as long as its 256-bit hash (RFC 7518 §3.2,
# https://www.rfc-editor.org/rfc/rfc7518#section-3.2): a shorter one can be
# guessed offline from any one token, and every user can get tokens.
JWT_SECRET_MIN_BYTES = 32
if len(JWT_SECRET.encode()) < JWT_SECRET_MIN_BYTES:
    raise ImproperlyConfigured(
        f"JWT_SECRET is shorter than {JWT_SECRET_MIN_BYTES} bytes (unset, it is "
        "SECRET_KEY): set a random one, e.g. "
        "python3 -c 'import secrets; print(secrets.token_urlsafe(50))'"
    )
if JWT_SECRET.startswith((SECRET_KEY_INSECURE_PREFIX, "insecure-dev-only-key")):
    raise ImproperlyConfigured(
        "JWT_SECRET is a development key: set a random one for production"
    )
