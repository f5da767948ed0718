"""What a benchmark starts and stops: the database, the servers under test, tokens.

Every server is a real process on a loopback port (bench/servers.py), started by the
benchmark and stopped by it (SIGTERM, then SIGKILL). Four kinds are measured:

- ``emergence``: this project on Daphne (`python -m emergence.server`), as `make run`
  serves it but on PostgreSQL + Redis with DEBUG off;
- ``uvicorn``: the same ASGI application under Uvicorn (what a user might pick instead);
- ``channels-echo``: a bare Channels echo consumer on the same Daphne and the same
  Redis channel layer (bench/echo/asgi.py): what Channels costs without our work;
- ``websockets-echo``: a bare `websockets` broadcast server (bench/echo/ws_server.py),
  the Python ceiling on this box.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg

from bench.servers import ROOT, SERVERS, Server, clean_environ, urlopen

PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
DB_NAME = os.environ.get("BENCH_DB", "emergence_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
USERNAME = "bench"
PASSWORD = "bench-password-1"
SECRET_KEY = "bench-secret-key-0123456789abcdef0123456789abcdef"
EMERGENCE_KINDS = ("emergence", "uvicorn")


def database_url(application_name: str = "emergence-bench", dsn: str = "") -> str:
    """The bench database, tagged with an application_name (pg_stat_activity)."""
    return f"{dsn or PG}/{DB_NAME}?application_name={application_name}"


def prepare_database(pg: str = "", **extra: str) -> None:
    """Create the bench database if missing, migrate it, and create the bench user."""
    base = pg or PG
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    env = emergence_env("prepare", prefix="emergence-bench-prepare", pg=base, **extra)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run(
        [*manage, "demo_user", "--username", USERNAME, "--password", PASSWORD],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )


def emergence_env(
    name: str, *, prefix: str, layer: str = "pubsub", pg: str = "", **extra: str
) -> dict[str, str]:
    """Production-like settings for one Emergence instance (DEBUG off, JSON logs)."""
    env = clean_environ()
    env.update(
        DJANGO_SETTINGS_MODULE="emergence.settings",
        DATABASE_URL=database_url(f"emergence-bench-{name}", pg),
        REDIS_URL=REDIS_URL,
        CHANNEL_LAYER=layer,
        CHANNEL_LAYER_PREFIX=prefix,
        SHARED_KEY_PREFIX=prefix,
        CACHE_KEY_PREFIX=prefix,
        SECRET_KEY=SECRET_KEY,
        DEBUG="0",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        INSTANCE_ID=name,
        LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
        # The load generator sends from few sockets; the per-socket limit (20/s) is
        # a product rule for humans, not a capacity limit.
        WS_RATE_LIMIT="1000",
        # A load test logs in hundreds of times from one address.
        LOGIN_THROTTLE_ADDRESS_FAILURES="100000",
        # A few accounts stand for thousands of users: the per-user limits (sockets,
        # frames across sockets, new threads) are product rules, not capacity.
        WS_MAX_SOCKETS_PER_USER="100000",
        WS_USER_RATE_LIMIT="100000",
        THREAD_CREATE_LIMIT="100000",
    )
    env.update(extra)
    return env


def echo_env(*, prefix: str, layer: str = "pubsub") -> dict[str, str]:
    """Settings of the bare Channels echo app: the same Redis and layer kind."""
    env = clean_environ()
    env.update(
        DJANGO_SETTINGS_MODULE="bench.echo.settings",
        REDIS_URL=REDIS_URL,
        CHANNEL_LAYER=layer,
        CHANNEL_LAYER_PREFIX=prefix,
        PYTHONUNBUFFERED="1",
    )
    return env


def token(server: Server) -> str:
    """A JWT for the bench user from POST /api/token."""
    body = json.dumps({"username": USERNAME, "password": PASSWORD}).encode()
    with urlopen(
        f"{server.http}/api/token", body, **{"Content-Type": "application/json"}
    ) as response:
        return json.load(response)["token"]


class Cluster:
    """Servers of one kind on one Redis prefix (one deployment), stopped together."""

    def __init__(
        self,
        kind: str,
        instances: int = 1,
        *,
        layer: str = "pubsub",
        log_dir: Path | None = None,
        pg: str = "",
        **extra: str,
    ) -> None:
        self.kind = kind
        self.layer = layer
        self.prefix = f"bench-{kind}-{os.getpid()}-{time.monotonic_ns()}"
        # Prepended to thread and session names (bench.load.url).
        self.nonce = f"{time.time_ns() % 10**12:x}-"
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="emergence-bench-"))
        self.servers = []
        for i in range(instances):
            name = f"{kind}-{chr(ord('a') + i)}"
            if kind in EMERGENCE_KINDS:
                env = emergence_env(name, prefix=self.prefix, layer=layer, pg=pg)
                env.update(extra)
            else:
                env = echo_env(prefix=self.prefix, layer=layer)
            self.servers.append(SERVERS[kind](name, env, self.log_dir))
        self.token = ""

    @property
    def emergence(self) -> bool:
        return self.kind in EMERGENCE_KINDS

    def __enter__(self) -> Cluster:
        try:
            for server in self.servers:
                server.start()
            if self.emergence:
                self.token = token(self.servers[0])
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def error_records(self) -> list[dict[str, Any]]:
        """Every ERROR (or worse) record the servers logged."""
        return [
            r
            for server in self.servers
            for r in server.records()
            if r.get("level") in ("ERROR", "CRITICAL")
        ]


def versions() -> dict[str, str]:
    """Versions of what is measured."""
    out = {"python": platform.python_version()}
    for dist in (
        "Django",
        "channels",
        "daphne",
        "channels-redis",
        "redis",
        "uvicorn",
        "websockets",
        "psycopg",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    try:
        with psycopg.connect(f"{PG}/postgres") as conn:
            out["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
    except psycopg.Error:
        out["postgresql"] = "unreachable"
    try:
        info = subprocess.run(
            ["redis-cli", "-u", REDIS_URL, "INFO", "server"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
        out["redis-server"] = next(
            (
                line.split(":", 1)[1].strip()
                for line in info.splitlines()
                if line.startswith("redis_version:")
            ),
            "unknown",
        )
    except (OSError, subprocess.SubprocessError):
        out["redis-server"] = "unknown"
    return out


def machine() -> dict[str, Any]:
    """The box the figures come from."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except OSError:
        mem_kib = 0
    return {
        "host": platform.node(),
        "kernel": platform.release(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "open_files_limit": _nofile(),
    }


def _nofile() -> int:
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
