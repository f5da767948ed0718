"""deploy/nginx.conf in front of two Daphne instances: a WebSocket chat end to end.

The file is run as written, except for what only Docker can provide: the upstream
servers (app1:8000, app2:8000) become the two loopback Daphnes, `listen 80` a free
loopback port, and a small main config gives nginx its own pid, logs and temp paths
under the test's tmp dir (no root needed, nothing under /var).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import assert_no_errors
from tests.e2e.wsclient import hello_of, wait_log
from tests.servers import ROOT, free_port

pytestmark = pytest.mark.e2e

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
DEPLOY_CONF = ROOT / "deploy" / "nginx.conf"

MAIN_CONF = """\
daemon off;
worker_processes 1;
{user}
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    log_format upstreams '$remote_addr "$request" $status upstream=$upstream_addr';
    access_log {d}/access.log upstreams;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {d}/emergence.conf;
}}
"""


def render(upstream_ports: list[int], listen_port: int) -> str:
    """deploy/nginx.conf with loopback upstreams and listen address."""
    text = DEPLOY_CONF.read_text()
    text, servers = re.subn(
        r"server app(\d):8000",
        lambda m: f"server 127.0.0.1:{upstream_ports[int(m.group(1)) - 1]}",
        text,
    )
    text, listens = re.subn(r"listen 80;", f"listen 127.0.0.1:{listen_port};", text)
    assert (servers, listens) == (2, 1), "deploy/nginx.conf changed shape"
    return text


class Nginx:
    """nginx from the Debian package, in the foreground, on a loopback port."""

    def __init__(self, workdir: Path, upstream_ports: list[int]) -> None:
        self.dir = workdir
        self.port = free_port()
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "emergence.conf").write_text(render(upstream_ports, self.port))
        # As root, workers would drop to `nobody`, who cannot enter pytest's tmp dir.
        user = "user root;" if os.geteuid() == 0 else ""
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(MAIN_CONF.format(d=self.dir, user=user))
        self.proc: subprocess.Popen | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def command(self, *extra: str) -> list[str]:
        return [
            NGINX,
            "-p",
            str(self.dir),
            "-c",
            str(self.conf),
            "-e",
            str(self.dir / "error.log"),
            *extra,
        ]

    def test_config(self) -> str:
        done = subprocess.run(
            self.command("-t"), capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        return done.stderr

    def start(self) -> "Nginx":
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.error_log()
            try:
                with urllib.request.urlopen(f"{self.http}/health/liveness", timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"nginx did not start: {self.error_log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text() if path.exists() else ""

    def access_lines(self) -> list[str]:
        path = self.dir / "access.log"
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def nginx(tmp_path):
    if not os.access(NGINX, os.X_OK):
        pytest.skip("nginx is not installed (.ci/run installs nginx-light)")
    started: list[Nginx] = []

    def start(upstream_ports: list[int]) -> Nginx:
        proxy = Nginx(tmp_path / f"nginx-{len(started)}", upstream_ports)
        started.append(proxy)
        assert "test is successful" in proxy.test_config()
        return proxy.start()

    yield start
    for proxy in started:
        proxy.stop()


def http_get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def http_post_json(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
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
    assert "[error]" not in proxy.error_log() and "[crit]" not in proxy.error_log()
    assert_no_errors(a)
    assert_no_errors(b)
