"""Failed-login throttle on POST /api/token and the login page (in process; the
shared cache is the test Redis). Across two Daphne instances:
tests/e2e/test_login_throttle.py."""

import json
import logging
import time

import pytest
from django.core.cache import cache
from redis.exceptions import ConnectionError as RedisConnectionError

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]

WRONG = "not-the-password-0xDEADBEEF"


@pytest.fixture(autouse=True)
def limits(settings):
    settings.LOGIN_THROTTLE_USER_FAILURES = 3
    settings.LOGIN_THROTTLE_ADDRESS_FAILURES = 5
    settings.LOGIN_THROTTLE_WINDOW_SECONDS = 60
    return settings


def token(client, username: str, password: str, address: str = "10.0.0.1"):
    return client.post(
        "/api/token",
        data=json.dumps({"username": username, "password": password}),
        content_type="application/json",
        REMOTE_ADDR=address,
    )


def login(client, username: str, password: str, address: str = "10.0.0.1"):
    return client.post(
        "/login/",
        {"username": username, "password": password},
        REMOTE_ADDR=address,
    )


def assert_throttled(response, window: int = 60) -> int:
    assert response.status_code == 429, response.content
    retry_after = int(response["Retry-After"])
    assert 0 < retry_after <= window
    return retry_after


def test_api_token_locks_the_username_after_n_failures(client, alice, password):
    assert [token(client, "alice", WRONG).status_code for _ in range(3)] == [401] * 3
    refused = token(client, "alice", WRONG)
    assert_throttled(refused)
    assert refused.json() == {"error": "too many failed logins; try again later"}
    # Locked means locked: the right password is not even checked ...
    assert_throttled(token(client, "alice", password))
    # ... from any address; other users are not affected.
    assert_throttled(token(client, "alice", password, address="10.9.9.9"))
    assert token(client, "bob", WRONG).status_code == 401


def test_success_clears_the_username_count(client, alice, password):
    for _ in range(2):
        assert token(client, "alice", WRONG).status_code == 401
    assert token(client, "alice", password).status_code == 200
    for _ in range(2):
        assert token(client, "alice", WRONG).status_code == 401
    assert token(client, "alice", password).status_code == 200


def test_address_limit_spans_usernames(client, alice, password):
    for n in range(5):
        assert token(client, f"guess{n}", WRONG).status_code == 401
    assert_throttled(token(client, "alice", password))
    assert token(client, "alice", password, address="10.0.0.2").status_code == 200


def test_lockout_ends_with_the_window(client, alice, password, limits):
    limits.LOGIN_THROTTLE_WINDOW_SECONDS = 1
    for _ in range(3):
        token(client, "alice", WRONG)
    assert_throttled(token(client, "alice", password), window=1)
    time.sleep(1.2)
    assert token(client, "alice", password).status_code == 200


def test_zero_disables_the_limits(client, alice, limits):
    limits.LOGIN_THROTTLE_USER_FAILURES = 0
    limits.LOGIN_THROTTLE_ADDRESS_FAILURES = 0
    assert {token(client, "alice", WRONG).status_code for _ in range(8)} == {401}


def test_failures_are_logged_without_the_password(client, alice, caplog):
    caplog.set_level(logging.INFO)
    for _ in range(4):
        token(client, "alice", WRONG)
    failed = [r for r in caplog.records if getattr(r, "event", "") == "login_failed"]
    throttled = [
        r for r in caplog.records if getattr(r, "event", "") == "login_throttled"
    ]
    assert [r.levelname for r in failed] == ["WARNING"] * 3
    assert [r.user_failures for r in failed] == [1, 2, 3]
    assert failed[0].user == "alice" and failed[0].client == "10.0.0.1"
    assert failed[0].endpoint == "api_token"
    assert len(throttled) == 1 and throttled[0].levelname == "WARNING"
    assert throttled[0].scope == "user" and 0 < throttled[0].retry_after <= 60
    for record in caplog.records:
        assert WRONG not in record.getMessage()
        assert WRONG not in repr(record.__dict__)


def test_login_page_is_throttled_too(client, alice, password, caplog):
    caplog.set_level(logging.INFO)
    for _ in range(3):
        response = login(client, "alice", WRONG)
        assert response.status_code == 200  # the form again, with its error
    refused = login(client, "alice", password)
    assert_throttled(refused)
    assert refused["Content-Type"].startswith("text/plain")
    assert b"Too many failed logins" in refused.content
    endpoints = {
        r.endpoint for r in caplog.records if getattr(r, "event", "") == "login_failed"
    }
    assert endpoints == {"login_page"}
    for record in caplog.records:
        assert WRONG not in repr(record.__dict__)


def test_login_page_and_api_share_the_count(client, alice, password):
    token(client, "alice", WRONG)
    login(client, "alice", WRONG)
    token(client, "alice", WRONG)
    assert_throttled(login(client, "alice", password))
    assert_throttled(token(client, "alice", password))


def test_login_page_success_clears_the_count(client, alice, password):
    for _ in range(2):
        login(client, "alice", WRONG)
    response = login(client, "alice", password)
    assert response.status_code == 302
    client.logout()
    for _ in range(2):
        assert login(client, "alice", WRONG).status_code == 200
    assert login(client, "alice", password).status_code == 302


def test_cache_outage_fails_open(client, alice, password, monkeypatch, caplog):
    caplog.set_level(logging.INFO)

    def down(*args, **kwargs):
        raise RedisConnectionError("Redis is down")

    for name in ("get_many", "add", "incr", "set", "delete"):
        monkeypatch.setattr(cache, name, down)
    assert {token(client, "alice", WRONG).status_code for _ in range(5)} == {401}
    assert token(client, "alice", password).status_code == 200
    unavailable = [
        r
        for r in caplog.records
        if getattr(r, "event", "") == "login_throttle_unavailable"
    ]
    assert unavailable and {r.levelname for r in unavailable} == {"WARNING"}


def test_malformed_bodies_are_not_counted(client, alice, password):
    for _ in range(5):
        response = client.post("/api/token", data="{", content_type="application/json")
        assert response.status_code == 400
    assert token(client, "alice", password).status_code == 200


# --- /admin/login/: the same throttle, the same counters ----------------------------


def admin_login(client, username: str, password: str, address: str = "10.0.0.1"):
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": username, "password": password, "next": "/admin/"},
        REMOTE_ADDR=address,
    )


@pytest.fixture
def staff(make_user):
    return make_user("root", is_staff=True, is_superuser=True)


def test_admin_login_page_is_the_admins_own(client, staff):
    response = client.get("/admin/login/?next=/admin/")
    assert response.status_code == 200
    assert "admin/login.html" in [t.name for t in response.templates]
    assert 'name="next" value="/admin/"' in response.content.decode()


def test_eight_wrong_staff_passwords_then_the_right_one_is_429(
    client, staff, password, limits, caplog
):
    caplog.set_level(logging.INFO)
    limits.LOGIN_THROTTLE_USER_FAILURES = 5  # the defaults
    limits.LOGIN_THROTTLE_ADDRESS_FAILURES = 20
    statuses = [admin_login(client, "root", WRONG).status_code for _ in range(8)]
    assert statuses == [200] * 5 + [429] * 3
    refused = admin_login(client, "root", password)
    assert_throttled(refused)
    assert refused.reason_phrase == "Too Many Requests"
    assert refused["Content-Type"].startswith("text/plain")
    # Not logged in: the admin still sends us to its login page.
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/").status_code == 302
    failed = [r for r in caplog.records if getattr(r, "event", "") == "login_failed"]
    assert {r.endpoint for r in failed} == {"admin_login"} and len(failed) == 5
    for record in caplog.records:
        assert WRONG not in repr(record.__dict__)


def test_admin_login_success_logs_in_and_clears_the_count(client, staff, password):
    for _ in range(2):
        assert admin_login(client, "root", WRONG).status_code == 200
    response = admin_login(client, "root", password)
    assert response.status_code == 302
    assert response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    client.logout()
    for _ in range(2):
        assert admin_login(client, "root", WRONG).status_code == 200
    assert admin_login(client, "root", password).status_code == 302


def test_a_non_staff_password_at_the_admin_counts_as_a_failure(client, alice, password):
    for _ in range(3):
        assert admin_login(client, "alice", password).status_code == 200
    assert_throttled(admin_login(client, "alice", password))
    assert_throttled(login(client, "alice", password))


def test_admin_login_page_and_api_share_the_count(client, staff, password):
    token(client, "root", WRONG)
    login(client, "root", WRONG)
    admin_login(client, "root", WRONG)
    assert_throttled(admin_login(client, "root", password))
    assert_throttled(login(client, "root", password))
    assert_throttled(token(client, "root", password))


def test_admin_address_limit_spans_usernames(client, staff, password):
    for n in range(5):
        assert admin_login(client, f"guess{n}", WRONG).status_code == 200
    assert_throttled(admin_login(client, "root", password))
    assert admin_login(client, "root", password, address="10.0.0.2").status_code == 302
