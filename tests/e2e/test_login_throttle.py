"""The failed-login throttle holds across instances: fail on A, B answers 429."""

import http.client
import json
import secrets
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests.conftest import assert_no_errors

pytestmark = pytest.mark.e2e

WRONG = "wrong-password-0xC0FFEE"
LIMITS = {
    "LOGIN_THROTTLE_USER_FAILURES": "3",
    "LOGIN_THROTTLE_ADDRESS_FAILURES": "50",
    "LOGIN_THROTTLE_WINDOW_SECONDS": "60",
}


def request(url: str, data: bytes | None = None, headers: dict | None = None):
    """(status, headers, body) of one request; HTTP errors are answers too."""
    req = urllib.request.Request(url, data=data, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def api_token(server, username: str, password: str):
    body = json.dumps({"username": username, "password": password}).encode()
    return request(
        f"{server.http}/api/token", body, {"Content-Type": "application/json"}
    )


def login_page_post(server, username: str, password: str):
    """POST the login form with a CSRF cookie and token of our own making.

    Django accepts any well-formed secret as long as the cookie and the form agree;
    this keeps the test independent of the login template (its GET needs the
    collected static files, which the test Daphnes do not have).
    """
    secret = secrets.token_hex(16)  # 32 characters of [0-9a-f]
    form = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": secret, "username": username, "password": password}
    ).encode()
    return request(
        f"{server.http}/login/",
        form,
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"csrftoken={secret}",
        },
    )


def status_line(server, username: str, password: str) -> str:
    """The status line Daphne sends for POST /api/token, as on the wire."""
    body = json.dumps({"username": username, "password": password})
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("POST", "/api/token", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return f"HTTP/1.1 {response.status} {response.reason}"
    finally:
        conn.close()


def test_failures_on_a_lock_the_user_out_on_b(daphne, alice, password):
    a = daphne("a", **LIMITS)
    b = daphne("b", **LIMITS)

    assert [api_token(a, "alice", WRONG)[0] for _ in range(3)] == [401] * 3

    status, headers, body = api_token(b, "alice", password)
    assert status == 429, body
    assert 0 < int(headers["Retry-After"]) <= 60
    assert json.loads(body) == {"error": "too many failed logins; try again later"}
    # Twisted's table has no phrase for 429: "429 Unknown Status" without the patch.
    assert status_line(b, "alice", password) == "HTTP/1.1 429 Too Many Requests"
    # The login page of either instance refuses alice as well ...
    status, headers, body = login_page_post(b, "alice", password)
    assert status == 429, body[:500]
    assert 0 < int(headers["Retry-After"]) <= 60
    # ... and nobody else.
    assert api_token(b, "bob", WRONG)[0] == 401

    failed = a.events("login_failed")
    assert [(r["level"], r["user"], r["user_failures"]) for r in failed] == [
        ("WARNING", "alice", 1),
        ("WARNING", "alice", 2),
        ("WARNING", "alice", 3),
    ]
    assert {r["endpoint"] for r in failed} == {"api_token"}
    throttled = b.events("login_throttled")
    assert [(r["level"], r["user"], r["scope"]) for r in throttled] == [
        ("WARNING", "alice", "user"),
        ("WARNING", "alice", "user"),
        ("WARNING", "alice", "user"),
    ]
    assert [r["endpoint"] for r in throttled] == [
        "api_token",
        "api_token",
        "login_page",
    ]
    for server in (a, b):
        assert WRONG not in server.log_text()
        assert password not in server.log_text()
        assert_no_errors(server)
