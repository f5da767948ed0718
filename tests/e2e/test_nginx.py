"""deploy/nginx.conf in front of two Daphne instances: a WebSocket chat end to end.

The file is run as written, except for what only Docker can provide: the upstream
servers (app1:8000, app2:8000) become the two loopback Daphnes, `listen 80` a free
loopback port, and a small main config gives nginx its own pid, logs and temp paths
under the test's tmp dir (bench/nginx.py: no root needed, nothing under /var).
"""

import itertools
import json
import os
import urllib.error
from types import SimpleNamespace

import pytest

from bench.nginx import NGINX, Nginx
from bench.servers import started, urlopen
from tests.conftest import assert_no_errors
from tests.e2e.wsclient import hello_of, wait_log

pytestmark = pytest.mark.e2e


@pytest.fixture
def nginx(tmp_path):
    """Start nginx (upstream ports) after `nginx -t`; all stopped afterwards."""
    if not os.access(NGINX, os.X_OK):
        pytest.skip("nginx is not installed (.ci/run installs nginx-light)")
    numbers = itertools.count()

    def make(upstream_ports: list[int]) -> Nginx:
        proxy = Nginx(tmp_path / f"nginx-{next(numbers)}", upstream_ports)
        assert "test is successful" in proxy.test_config()
        return proxy

    with started(make) as start:
        yield start


def http_get(url: str) -> tuple[int, dict]:
    try:
        with urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def http_post_json(url: str, body: dict) -> tuple[int, dict]:
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    try:
        with urlopen(url, data, timeout=10, **headers) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


async def test_chat_through_nginx_over_two_instances(
    daphne, nginx, clients, alice, bob, password
):
    a, b = daphne("a"), daphne("b")
    proxy = nginx([a.port, b.port])
    front = SimpleNamespace(ws=proxy.ws)

    # Plain HTTP through the proxy: readiness, a token, /metrics kept inside.
    status, body = http_get(f"{proxy.http}/health/readiness")
    assert (status, body["overall"]) == (200, "up"), body
    status, body = http_post_json(
        f"{proxy.http}/api/token", {"username": "alice", "password": password}
    )
    assert status == 200, body
    alice_token = body["token"]
    status, body = http_post_json(
        f"{proxy.http}/api/token", {"username": "bob", "password": password}
    )
    assert status == 200, body
    bob_token = body["token"]
    assert http_get(f"{proxy.http}/metrics")[0] == 403

    # Round robin, no stickiness: successive sockets land on both instances.
    seen = []
    for n in range(4):
        probe = await clients.open(front, f"probe-{n}", alice_token)
        seen.append(hello_of(probe)["instance"])
        await probe.close()
    assert set(seen) == {"a", "b"}, seen

    # alice on one instance, bob on the other, both through nginx.
    alice_ws = await clients.open(front, "sess-alice", alice_token)
    bob_ws = None
    for n in range(4):
        candidate = await clients.open(front, f"sess-bob-{n}", bob_token)
        if hello_of(candidate)["instance"] != hello_of(alice_ws)["instance"]:
            bob_ws = candidate
            break
        await candidate.close()
    assert bob_ws is not None, "nginx never sent bob to the other instance"

    ack = await alice_ws.chat("hello-1", "hello bob, from the other instance")
    assert ack["seq"] == 1 and ack["duplicate"] is False
    await bob_ws.wait_seq(1)
    reply = await bob_ws.chat("reply-1", "hi alice")
    assert reply["seq"] == 2
    for ws in (alice_ws, bob_ws):
        await ws.wait_seq(2)  # the sender's own socket gets its message too
        texts = [(f["seq"], f["user"], f["text"]) for f in ws.of_type("chat.message")]
        assert texts == [
            (1, "alice", "hello bob, from the other instance"),
            (2, "bob", "hi alice"),
        ]

    servers = {"a": a, "b": b}
    for ws in (alice_ws, bob_ws):
        await ws.close()
        hello = hello_of(ws)
        await wait_log(
            servers[hello["instance"]], "ws_disconnect", session_id=hello["session_id"]
        )

    # nginx's own log: WebSocket upgrades (101) served by both upstreams.
    upgrades = [line for line in proxy.access_lines() if '"GET /ws/' in line]
    assert all(" 101 " in line for line in upgrades), upgrades
    used = {line.rsplit("upstream=", 1)[1] for line in upgrades}
    assert used == {f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"}, upgrades
    assert "[error]" not in proxy.log_text() and "[crit]" not in proxy.log_text()
    assert_no_errors(a)
    assert_no_errors(b)
