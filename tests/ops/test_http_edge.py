"""Bad input over HTTP, through Django's test client (PROTOCOL.md §1, bad input):
a 4xx with a JSON body on /api/, never a 500, never an ERROR in the log. A real
Daphne gets the same requests as raw bytes in tests/e2e/test_bad_input.py."""

import io
import json
import logging
from collections.abc import Iterator

import pytest
from django.test import Client

from ops.http_edge import MAX_JSON_DEPTH, session_key_usable, storable
from ops.logs import ClientErrorFilter

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]

NUL_BODY = "the body contains a NUL character or a lone surrogate"
TOO_DEEP = f"JSON nested deeper than {MAX_JSON_DEPTH} levels"


class Console:
    """What the console handler wrote (its filters applied), as text."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self, level: str) -> list[str]:
        return [line for line in self.text.splitlines() if f" {level} " in line]

    def assert_no_errors(self) -> None:
        assert not self.lines("ERROR") and not self.lines("CRITICAL"), self.text
        assert "Traceback" not in self.text, self.text


@pytest.fixture
def console() -> Iterator[Console]:
    """The settings' console handler, writing into a buffer for the test."""
    handler = next(
        h
        for h in logging.getLogger().handlers
        if any(isinstance(f, ClientErrorFilter) for f in h.filters)
    )
    stream = io.StringIO()
    previous = handler.setStream(stream)
    yield Console(stream)
    handler.setStream(previous)


@pytest.fixture
def bearer(alice, token_for) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(alice)}"}


def post_raw(client: Client, url: str, body: str | bytes, **headers: str):
    return client.post(url, data=body, content_type="application/json", headers=headers)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def assert_refused(response, status: int, error: str | None = None) -> None:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json"
    if error is not None:
        assert response.json() == {"error": error}
    else:
        assert set(response.json()) == {"error"}


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("alice", True),
        ("é ü 日本 🙂", True),
        ("", True),
        ("a\x00b", False),
        ("\ud800", False),
        ("x\udfff", False),
    ],
)
def test_storable_is_what_postgresql_text_holds(text, ok):
    assert storable(text) is ok


def test_a_session_key_must_exist_and_be_storable():
    assert session_key_usable("0123456789abcdefghijklmnopqrstuv")
    assert not session_key_usable(None)
    assert not session_key_usable("abcdefgh\x00")


# --- JSON bodies of /api/ -----------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        '{"username": "al\\u0000ice", "password": "x"}',
        '{"username": "alice", "password": "\\ud800"}',
        '{"username\\u0000": "alice", "password": "x"}',
    ],
)
def test_token_with_unstorable_text_is_400(client, alice, console, body):
    assert_refused(post_raw(client, "/api/token", body), 400, NUL_BODY)
    console.assert_no_errors()


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 50_000])
def test_deep_json_is_400(client, console, depth):
    assert_refused(post_raw(client, "/api/token", nested(depth)), 400, TOO_DEEP)
    console.assert_no_errors()


def test_json_at_the_depth_limit_reaches_the_view(client, alice, password):
    inner = json.loads(nested(MAX_JSON_DEPTH - 1))
    body = {"username": "alice", "password": password, "extra": inner}
    response = post_raw(client, "/api/token", json.dumps(body))
    assert response.status_code == 200, response.content


def test_thread_with_a_nul_member_is_400(client, bearer, console):
    body = json.dumps({"id": "t-nul", "members": ["bo\x00b"]})
    assert_refused(post_raw(client, "/api/threads", body, **bearer), 400, NUL_BODY)
    console.assert_no_errors()


def test_a_malformed_body_still_gets_the_views_answer(client):
    response = post_raw(client, "/api/token", b"\xff{")
    assert_refused(response, 400, "body must be a JSON object")


def test_too_many_form_fields_on_the_api_is_a_json_400(client, console):
    form = "&".join(f"f{i}=1" for i in range(1001))
    response = client.post(
        "/api/token", data=form, content_type="application/x-www-form-urlencoded"
    )
    assert_refused(response, 400)
    console.assert_no_errors()


# --- Path and query string ----------------------------------------------------------


@pytest.mark.parametrize("authenticated", [False, True])
def test_nul_in_the_path_is_400(client, bearer, console, authenticated):
    headers = bearer if authenticated else {}
    response = client.get("/api/threads/%00/messages", headers=headers)
    assert_refused(
        response, 400, "the path contains a NUL character or a lone surrogate"
    )
    console.assert_no_errors()


def test_nul_in_the_query_string_is_400(client, bearer, console):
    response = client.get("/api/threads/main/messages?after_seq=%00", headers=bearer)
    assert_refused(response, 400)
    page = client.get("/?thread=ma%00in")
    assert page.status_code == 400
    assert page["Content-Type"].startswith("text/html")
    console.assert_no_errors()


def test_too_many_query_fields_is_400(client, bearer, console):
    query = "&".join(f"q{i}=1" for i in range(1001))
    response = client.get(f"/api/threads/main/messages?{query}", headers=bearer)
    assert_refused(response, 400)
    console.assert_no_errors()


# --- Cookies ------------------------------------------------------------------------


def test_a_nul_session_cookie_is_no_session(client, console):
    response = client.get("/", HTTP_COOKIE='sessionid="abcdefgh\\000"')
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/"
    console.assert_no_errors()


def test_only_the_unstorable_cookie_is_dropped(client, alice, console):
    client.force_login(alice)
    session = client.cookies["sessionid"].value
    cookie = f'junk="x\\000"; sessionid={session}'
    response = client.get("/", HTTP_COOKIE=cookie)
    assert response.status_code == 200
    assert response.context["user"] == alice
    console.assert_no_errors()


# --- Body size ----------------------------------------------------------------------


def test_a_body_over_the_limit_is_413(client, settings, console):
    body = b"x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    assert_refused(post_raw(client, "/api/token", body), 413)
    page = client.post("/login/", data=body, content_type="text/plain")
    assert page.status_code == 413
    assert page["Content-Type"].startswith("text/html")
    console.assert_no_errors()


def test_a_body_at_the_limit_is_read(client, settings, console):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 64
    body = json.dumps({"username": "u", "password": "p"}).ljust(64)
    assert post_raw(client, "/api/token", body).status_code == 401


# --- Log levels ---------------------------------------------------------------------


def test_a_foreign_host_is_400_and_a_warning(client, console):
    response = client.get("/api/health", HTTP_HOST="evil.example")
    assert response.status_code == 400
    console.assert_no_errors()
    warnings = console.lines("WARNING")
    assert any("django.security.DisallowedHost" in line for line in warnings)


def test_an_unexpected_exception_is_still_an_error_with_traceback(
    bearer, console, monkeypatch
):
    def broken(**kwargs):
        raise RuntimeError("boom in thread_get")

    monkeypatch.setattr("chat.views.thread_get", broken)
    client = Client(raise_request_exception=False)
    response = client.get("/api/threads/main/messages", headers=bearer)
    assert response.status_code == 500
    errors = console.lines("ERROR")
    assert any("django.request" in line for line in errors), console.text
    assert "Traceback" in console.text
    assert "RuntimeError: boom in thread_get" in console.text
