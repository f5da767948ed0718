"""Bad input against a real Daphne, as bytes on the wire (PROTOCOL.md §1, bad input):
every request a scanner sends is a 4xx (JSON on /api/), none an ERROR in the JSON
log, and a scan of them leaves `log_report` short of CRITICAL."""

import http.client
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ops.http_edge import MAX_JSON_DEPTH
from ops.logreport import CRITICAL, LogReport, Thresholds
from tests.conftest import assert_no_errors
from tests.e2e.wsclient import open_ws, ws_url

pytestmark = pytest.mark.e2e

NUL_BODY = "the body contains a NUL character or a lone surrogate"
NUL_PATH = "the path contains a NUL character or a lone surrogate"
TOO_DEEP = f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
ESCAPED_NUL_COOKIE = b'sessionid="abcdefgh\\000"'  # http.cookies' octal escape


@dataclass(frozen=True)
class Answer:
    """One HTTP answer as the client saw it."""

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        assert self.headers.get("Content-Type") == "application/json", self
        return json.loads(self.body)


def send(
    server: Any,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, Any] | None = None,
) -> Answer:
    """One request over http.client, which sends header bytes as given."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Answer(
            response.status,
            response.reason,
            dict(response.getheaders()),
            response.read(),
        )
    finally:
        conn.close()


def send_raw(server: Any, request: bytes) -> bytes:
    """Bytes no client library would send; the status line of the answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def token_with_nul(server: Any, bearer: dict[str, str]) -> None:
    body = json.dumps({"username": "al\x00ice", "password": "x"}).encode()
    answer = send(server, "POST", "/api/token", body)
    assert (answer.status, answer.json()) == (400, {"error": NUL_BODY})


def deep_brackets(server: Any, bearer: dict[str, str]) -> None:
    body = b"[" * 50_000 + b"]" * 50_000
    answer = send(server, "POST", "/api/token", body)
    assert (answer.status, answer.json()) == (400, {"error": TOO_DEEP})


def nul_thread_id(server: Any, bearer: dict[str, str]) -> None:
    for headers in ({}, bearer):
        answer = send(server, "GET", "/api/threads/%00/messages", headers=headers)
        assert (answer.status, answer.json()) == (400, {"error": NUL_PATH})


def id_outside_the_alphabet(server: Any, bearer: dict[str, str]) -> None:
    answer = send(server, "GET", "/api/threads/a.b%0A/messages", headers=bearer)
    assert (answer.status, answer.json()) == (404, {"error": "no such thread"})


def nul_member(server: Any, bearer: dict[str, str]) -> None:
    body = json.dumps({"id": "scan", "members": ["bo\x00b"]}).encode()
    answer = send(server, "POST", "/api/threads", body, bearer)
    assert (answer.status, answer.json()) == (400, {"error": NUL_BODY})


def nul_session_cookie(server: Any, bearer: dict[str, str]) -> None:
    answer = send(server, "GET", "/", headers={"Cookie": ESCAPED_NUL_COOKIE})
    assert answer.status == 302, answer
    assert answer.headers["Location"] == "/login/?next=/"
    # A raw NUL byte is no valid header at all: Twisted's parser refuses it.
    raw = send(server, "GET", "/", headers={"Cookie": b"sessionid=abcdefgh\x00"})
    assert raw.status == 400, raw


def foreign_host(server: Any, bearer: dict[str, str]) -> None:
    answer = send(server, "GET", "/api/health", headers={"Host": "evil.example"})
    assert answer.status == 400, answer


def body_over_the_limit(server: Any, bearer: dict[str, str]) -> None:
    body = b"x" * (3 * 1024 * 1024)
    answer = send(server, "POST", "/api/token", body)
    assert answer.status == 413, answer.status
    assert answer.reason == "Request Entity Too Large"
    assert set(answer.json()) == {"error"}


def undecodable_query(server: Any, bearer: dict[str, str]) -> None:
    request = b"GET /api/health?q=\xff\xfe HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    assert send_raw(server, request).split(b" ")[1] == b"400"


SCAN: list[Callable[[Any, dict[str, str]], None]] = [
    token_with_nul,
    deep_brackets,
    nul_thread_id,
    id_outside_the_alphabet,
    nul_member,
    nul_session_cookie,
    foreign_host,
    body_over_the_limit,
    undecodable_query,
]


@pytest.fixture
def bearer(alice, token_for) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(alice)}"}


@pytest.mark.parametrize("case", SCAN, ids=[case.__name__ for case in SCAN])
def test_bad_input_is_a_4xx_and_no_error(daphne, bearer, case):
    server = daphne("a")
    case(server, bearer)
    assert_no_errors(server)
    assert server.records(), "the server wrote no JSON log"


def test_a_scan_leaves_log_report_short_of_critical(daphne, bearer):
    server = daphne("a")
    for _ in range(10):
        for case in SCAN:
            case(server, bearer)
    assert_no_errors(server)
    report = LogReport().feed_lines(server.log_text().splitlines())
    result = report.result(Thresholds.from_settings())
    assert result["status"] != CRITICAL, result
    assert result["summary"]["errors"] == 0, result


async def test_a_nul_session_cookie_on_a_socket_is_no_session(daphne):
    server = daphne("a")
    try:
        ws = await open_ws(
            ws_url(server, "nul-cookie"),
            additional_headers={"Cookie": ESCAPED_NUL_COOKIE.decode()},
        )
    except InvalidStatus as exc:  # today: HTTP 500 "Exception inside application"
        pytest.fail(f"handshake refused: {exc}")
    with pytest.raises(ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    assert_no_errors(server)
