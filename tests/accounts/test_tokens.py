"""accounts.tokens: HS256 JWTs with sub/username/iat/exp."""

import time

import jwt
import pytest

from accounts import tokens


def test_issue_has_the_documented_claims(settings):
    before = int(time.time())
    token = tokens.token_issue(user_id=7, username="alice")
    claims = jwt.decode(token, settings.JWT_SECRET, algorithms=["HS256"])
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert claims["sub"] == "7"
    assert claims["username"] == "alice"
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == settings.JWT_TTL_SECONDS == 3600


def test_issue_with_custom_ttl(settings):
    token = tokens.token_issue(user_id=1, username="a", ttl_seconds=60)
    claims = jwt.decode(token, settings.JWT_SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 60


def test_ttl_follows_the_setting(settings):
    settings.JWT_TTL_SECONDS = 120
    claims = jwt.decode(
        tokens.token_issue(user_id=1, username="a"),
        settings.JWT_SECRET,
        algorithms=["HS256"],
    )
    assert claims["exp"] - claims["iat"] == 120


def test_jwt_secret_defaults_to_secret_key(settings):
    assert settings.JWT_SECRET == settings.SECRET_KEY


def test_round_trip():
    assert tokens.token_user_id(tokens.token_issue(user_id=42, username="x")) == 42


def test_expired_token_is_refused():
    assert (
        tokens.token_user_id(
            tokens.token_issue(user_id=1, username="a", ttl_seconds=-1)
        )
        is None
    )


def test_token_signed_with_another_secret_is_refused():
    now = int(time.time())
    claims = {"sub": "1", "username": "a", "iat": now, "exp": now + 60}
    forged = jwt.encode(claims, "not-the-secret-" + "x" * 32, algorithm="HS256")
    assert tokens.token_user_id(forged) is None


def test_secret_rotation_invalidates_tokens(settings):
    token = tokens.token_issue(user_id=1, username="a")
    settings.JWT_SECRET = "rotated-secret-0123456789abcdef0123456789"
    assert tokens.token_user_id(token) is None


def test_unsigned_token_is_refused():
    now = int(time.time())
    claims = {"sub": "1", "username": "a", "iat": now, "exp": now + 60}
    assert tokens.token_user_id(jwt.encode(claims, None, algorithm="none")) is None


def test_other_algorithm_is_refused(settings):
    settings.JWT_SECRET = "k" * 64  # long enough for HS512 without a warning
    now = int(time.time())
    claims = {"sub": "1", "username": "a", "iat": now, "exp": now + 60}
    token = jwt.encode(claims, settings.JWT_SECRET, algorithm="HS512")
    assert tokens.token_user_id(token) is None


@pytest.mark.parametrize("missing", ["sub", "exp", "iat"])
def test_required_claims(settings, missing):
    now = int(time.time())
    claims = {"sub": "1", "username": "a", "iat": now, "exp": now + 60}
    del claims[missing]
    token = jwt.encode(claims, settings.JWT_SECRET, algorithm="HS256")
    assert tokens.token_user_id(token) is None


@pytest.mark.parametrize("sub", ["abc", "", "1.5"])
def test_non_numeric_sub_is_refused(settings, sub):
    now = int(time.time())
    claims = {"sub": sub, "iat": now, "exp": now + 60}
    token = jwt.encode(claims, settings.JWT_SECRET, algorithm="HS256")
    assert tokens.token_user_id(token) is None


@pytest.mark.parametrize(
    "garbage", ["", "garbage", "a.b.c", "x" * 5000, "eyJhbGciOiJIUzI1NiJ9..", "🙂"]
)
def test_garbage_is_refused(garbage):
    assert tokens.token_user_id(garbage) is None
