"""JWTs for API clients: HS256, claims sub/username/iat/exp (PROTOCOL.md §1)."""

import time
from dataclasses import dataclass

import jwt
from django.conf import settings

ALGORITHM = "HS256"


def token_issue(*, user_id: int, username: str, ttl_seconds: int | None = None) -> str:
    """Sign a JWT for the user, valid for ttl_seconds (default JWT_TTL_SECONDS)."""
    now = int(time.time())
    ttl = settings.JWT_TTL_SECONDS if ttl_seconds is None else ttl_seconds
    claims = {"sub": str(user_id), "username": username, "iat": now, "exp": now + ttl}
    return jwt.encode(claims, settings.JWT_SECRET, algorithm=ALGORITHM)


@dataclass(frozen=True)
class TokenClaims:
    """What a valid, unexpired token says: whose it is and when it expires."""

    user_id: int
    expires_at: int  # the `exp` claim, seconds since the epoch


def token_claims(token: str) -> TokenClaims | None:
    """The claims of a valid, unexpired token, else None."""
    if not token:
        return None
    try:
        claims = jwt.decode(
            token,
            settings.JWT_SECRET,
            algorithms=[ALGORITHM],
            options={"require": ["sub", "exp", "iat"]},
        )
        return TokenClaims(user_id=int(claims["sub"]), expires_at=int(claims["exp"]))
    except (jwt.InvalidTokenError, ValueError, TypeError):
        return None


def token_user_id(token: str) -> int | None:
    """The user id of a valid, unexpired token, else None."""
    claims = token_claims(token)
    return None if claims is None else claims.user_id
