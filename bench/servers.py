"""Server processes for benchmarks and tests: started, waited for, logged, stopped.

Every server is a real process on a loopback port (a free one unless given), run
from the project root with its stdout and stderr in a log file of its own, ready
once GET /health/liveness answers, stopped with a signal (SIGKILL if it outlives
the stop timeout). The kinds: Daphne (`python -m emergence.server`, or bare
`daphne` for the Channels echo app), Uvicorn, the `websockets` echo server, and
nginx (bench/nginx.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent
# Daphne options as the Makefile's `make run` passes them.
DAPHNE_FLAGS = [
    "--ping-interval",
    "20",
    "--ping-timeout",
    "60",
    "--application-close-timeout",
    "15",
    "--websocket_connect_timeout",
    "15",
]


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_environ() -> dict[str, str]:
    """This environment minus anything a test runner or a shell set for Django."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "PYTEST_", "TEST_"))
    }


def urlopen(url: str, data: bytes | None = None, timeout: float = 10.0, **headers):
    """urllib without any configured proxy: everything here is loopback."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, data=data, headers=headers)
    return opener.open(request, timeout=timeout)


def stop_process(
    proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 15.0
) -> None:
    """Send `sig` and wait for the process; SIGKILL it if it outlives `timeout`."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def json_records(path: Path) -> list[dict[str, Any]]:
    """The JSON log records of a file, one per line (other lines skipped)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


class Server:
    """One server process on a loopback port, with its output in a log file."""

    kind = "server"
    start_timeout = 30.0
    stop_timeout = 15.0
    stop_signal = signal.SIGTERM

    def __init__(
        self,
        name: str,
        env: dict[str, str] | None,
        log_dir: Path,
        port: int | None = None,
    ) -> None:
        self.name = name
        # None inherits this process's environment.
        self.env = env
        self.log_dir = log_dir
        # A fixed port lets a test start a replacement on the port of a stopped one.
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self._log: Any = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.kind}-{self.name}-{self.port}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        return self.env

    def start(self, timeout: float | None = None) -> Self:
        """Start the process and wait (bounded) until its liveness answers."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env=self.environment(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + (timeout or self.start_timeout)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} {self.name} exited: {self.tail()}")
            try:
                with urlopen(f"{self.http}/health/liveness", timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.kind} {self.name} did not start: {self.tail()}")

    def stop(self, sig: int | None = None, timeout: float | None = None) -> int | None:
        """Signal the process (SIGKILL after the timeout); return its exit code."""
        stop_process(self.proc, sig or self.stop_signal, timeout or self.stop_timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        return None if self.proc is None else self.proc.returncode

    def kill(self) -> None:
        """kill -9: no chance to clean up."""
        self.stop(signal.SIGKILL)

    def rss_kib(self) -> int:
        """Resident set size of the server process, from /proc."""
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def log_text(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def records(self) -> list[dict[str, Any]]:
        """JSON log records written so far (other lines skipped)."""
        return json_records(self.log_path)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("event") == name]


class Daphne(Server):
    """emergence.asgi on Daphne through emergence.server (JSON access log)."""

    kind = "emergence"
    module = "emergence.server"
    app = "emergence.asgi:application"
    flags = DAPHNE_FLAGS

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            self.module,
            "-b",
            "127.0.0.1",
            "-p",
            str(self.port),
            *self.flags,
            self.app,
        ]


class ChannelsEcho(Daphne):
    """The bare Channels echo consumer (bench/echo/asgi.py) on plain Daphne."""

    kind = "channels-echo"
    module = "daphne"
    app = "bench.echo.asgi:application"


class Uvicorn(Server):
    """emergence.asgi on Uvicorn, the alternative a user might pick."""

    kind = "uvicorn"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            # Log queue and gc freeze as under Daphne (emergence.server).
            "--factory",
            "bench.uvicorn_app:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--lifespan",
            "off",
            # Daphne compresses nothing and logs through the app's logging.
            "--ws",
            "websockets-sansio",
            "--ws-per-message-deflate",
            "false",
            "--log-level",
            "warning",
            "--ws-ping-interval",
            "20",
            "--ws-ping-timeout",
            "60",
            "--timeout-graceful-shutdown",
            "10",
        ]


class WebsocketsEcho(Server):
    """The bare `websockets` broadcast server (bench/echo/ws_server.py)."""

    kind = "websockets-echo"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.echo.ws_server", "--port", str(self.port)]


SERVERS: dict[str, type[Server]] = {
    cls.kind: cls for cls in (Daphne, Uvicorn, ChannelsEcho, WebsocketsEcho)
}


@contextlib.contextmanager
def started(make: Callable[..., Server]) -> Iterator[Callable[..., Any]]:
    """A starter of `make(...)` servers; every one of them is stopped on exit."""
    servers: list[Server] = []

    def start(*args: Any, **kwargs: Any) -> Any:
        server = make(*args, **kwargs)
        servers.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
