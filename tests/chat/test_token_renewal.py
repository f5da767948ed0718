"""POST /api/token with `Authorization: Bearer` and no body: renewal."""

import time

import jwt
import pytest
from django.conf import settings as django_settings

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]


def renew(client, token: str, body: bytes = b""):
    return client.post(
        "/api/token",
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def claims(token: str) -> dict:
    return jwt.decode(token, django_settings.JWT_SECRET, algorithms=["HS256"])


def test_bearer_renewal_gives_a_fresh_lifetime(client, alice, token_for):
    old = token_for(alice, ttl_seconds=5)
    before = time.time()
    response = renew(client, old)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["expires_in"] == django_settings.JWT_TTL_SECONDS
    new = claims(body["token"])
    assert new["sub"] == str(alice.pk) and new["username"] == "alice"
    assert new["exp"] > claims(old)["exp"]
    assert new["exp"] >= int(before) + django_settings.JWT_TTL_SECONDS


@pytest.mark.parametrize("ttl", [-1, None])
def test_expired_or_bad_bearer_is_401(client, alice, token_for, ttl):
    token = token_for(alice, ttl_seconds=ttl) if ttl is not None else "garbage"
    response = renew(client, token)
    assert response.status_code == 401
    assert "token" not in response.json()


def test_bearer_of_an_inactive_user_is_401(client, alice, token_for):
    token = token_for(alice)
    alice.is_active = False
    alice.save()
    assert renew(client, token).status_code == 401


def test_a_body_still_means_username_and_password(client, alice, token_for, password):
    body = f'{{"username": "alice", "password": "{password}"}}'.encode()
    response = renew(client, "garbage", body)
    assert response.status_code == 200
    assert claims(response.json()["token"])["sub"] == str(alice.pk)
