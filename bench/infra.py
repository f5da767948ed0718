"""Throwaway PostgreSQL and Redis servers of our own, for benchmarks that break them.

Stopping, killing or restarting these never touches the machine's shared servers:
each lives in its own temporary directory on its own loopback port and is removed
when its context manager exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.servers import free_port, stop_process

logger = logging.getLogger(__name__)

PG_ROOT = Path("/usr/lib/postgresql")
PG_USER = "postgres"
# Settings of a cluster whose data nobody needs after the run: speed over safety.
PG_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "'64MB'",
    "log_min_messages": "warning",
    "logging_collector": "off",
}


def pg_bindir(version: str | None = None) -> Path:
    """The newest PostgreSQL under /usr/lib/postgresql (or the version asked for)."""
    if version:
        return PG_ROOT / version / "bin"
    versions = sorted(
        (p for p in PG_ROOT.iterdir() if (p / "bin" / "initdb").exists()),
        key=lambda p: int(p.name) if p.name.isdigit() else 0,
    )
    if not versions:
        raise RuntimeError(f"no PostgreSQL with initdb under {PG_ROOT}")
    return versions[-1] / "bin"


def _is_root() -> bool:
    return os.geteuid() == 0


class PrivatePostgres:
    """A PostgreSQL cluster of our own: initdb'd in a tempdir, trust auth, loopback."""

    def __init__(self, version: str | None = None, port: int | None = None) -> None:
        self.bindir = pg_bindir(version)
        self.port = port or free_port()
        self.tmp = Path(tempfile.mkdtemp(prefix="emergence-private-pg-"))
        self.data = self.tmp / "data"
        self.logfile = self.tmp / "postgres.log"
        self._initialized = False

    # --- running the server's own tools ------------------------------------------

    def _run(self, *args: str, check: bool = True, timeout: float = 60.0) -> Any:
        """Run a PostgreSQL binary as the postgres user (it refuses to run as root)."""
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if _is_root():
            cmd = ["runuser", "-u", PG_USER, "--", *cmd]
        return subprocess.run(
            cmd,
            check=check,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.tmp,
        )

    def init(self) -> None:
        """initdb with trust auth, then our settings appended to postgresql.conf."""
        if self._initialized:
            return
        if _is_root():
            # The postgres user must own the data dir and reach the socket dir.
            os.chmod(self.tmp, 0o755)
            shutil.chown(self.tmp, PG_USER, PG_USER)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            PG_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        )
        settings = {
            **PG_SETTINGS,
            "port": str(self.port),
            "unix_socket_directories": f"'{self.tmp}'",
        }
        conf = "".join(f"{k} = {v}\n" for k, v in settings.items())
        with (self.data / "postgresql.conf").open("a") as fh:
            fh.write("\n# emergence bench (bench/infra.py)\n" + conf)
        self._initialized = True

    # --- life cycle -----------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> PrivatePostgres:
        """Start (initdb first if needed) and wait until it accepts connections."""
        self.init()
        result = self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.logfile),
            "-w",
            "-t",
            str(int(timeout)),
            "start",
            check=False,
            timeout=timeout + 10,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"pg_ctl start failed: {result.stdout}{result.stderr}\n"
                f"{self.log_tail()}"
            )
        self.wait_ready(timeout)
        logger.info("private postgres up on port %d", self.port)
        return self

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """pg_ctl stop -m smart|fast|immediate; a no-op when it is not running."""
        if not self.running():
            return
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-m",
            mode,
            "-w",
            "-t",
            str(int(timeout)),
            "stop",
            check=False,
            timeout=timeout + 10,
        )

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL the postmaster and wait for its backends to die with it."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        children = _children(pid)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        for child in [pid, *children]:
            while _alive(child) and time.monotonic() < deadline:
                time.sleep(0.05)
        # Backends notice the postmaster's death by themselves; do not wait forever.
        for child in children:
            if _alive(child):
                os.kill(child, signal.SIGKILL)
        # Our pid 1 may never reap the orphans: their zombies would make the next
        # postmaster think the old one still runs, so the stale lock file goes.
        socket = self.tmp / f".s.PGSQL.{self.port}"
        for stale in (self.data / "postmaster.pid", socket, Path(f"{socket}.lock")):
            with contextlib.suppress(OSError):
                stale.unlink()

    def postmaster_pid(self) -> int | None:
        """The postmaster's pid from postmaster.pid, if it is alive."""
        pidfile = self.data / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _alive(pid) else None

    def running(self) -> bool:
        return self.postmaster_pid() is not None

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until a connection succeeds (bounded)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.url(), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.Error as exc:
                last = exc
                time.sleep(0.05)
        raise RuntimeError(f"private postgres not ready in {timeout}s: {last}")

    # --- addresses ------------------------------------------------------------------

    @property
    def base(self) -> str:
        """The server's URL without a database (what bench.harness calls `pg`)."""
        return f"postgres://{PG_USER}@127.0.0.1:{self.port}"

    def url(self, dbname: str = "postgres") -> str:
        return f"{self.base}/{dbname}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.logfile.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def close(self) -> None:
        """Stop (immediate if fast fails) and remove every file."""
        try:
            self.stop("fast")
            if self.running():
                self.stop("immediate")
            if self.running():
                self.kill()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


class PrivateRedis:
    """redis-server of our own on a free loopback port, no persistence."""

    def __init__(self, port: int | None = None, binary: str = "redis-server") -> None:
        self.binary = shutil.which(binary) or binary
        self.port = port or free_port()
        self.tmp = Path(tempfile.mkdtemp(prefix="emergence-private-redis-"))
        self.logfile = self.tmp / "redis.log"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.tmp),
            "--logfile",
            str(self.logfile),
            "--daemonize",
            "no",
            "--maxclients",
            "10000",
        ]

    def start(self, timeout: float = 10.0) -> PrivateRedis:
        """Start on our port (the same one after a restart) and wait for PONG."""
        if self.running():
            return self
        self.proc = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.tmp,
        )
        self.wait_ready(timeout)
        logger.info("private redis up on port %d", self.port)
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until PING answers (bounded)."""
        import redis

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log_tail()}")
            try:
                client = redis.Redis(port=self.port, socket_timeout=1)
                try:
                    if client.ping():
                        return
                finally:
                    client.close()
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"private redis not ready in {timeout}s")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """SIGTERM (a clean shutdown; nothing is saved) or SIGKILL."""
        stop_process(self.proc, sig, timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self, down_for: float = 0.0) -> None:
        """Stop, stay down `down_for` seconds, start again on the same port."""
        self.stop()
        if down_for > 0:
            time.sleep(down_for)
        self.start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.logfile.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> PrivateRedis:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes (its parent has not reaped it yet).
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _children(pid: int) -> list[int]:
    """Direct children of a process, from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            out.append(int(entry.name))
    return out


def prepare_private_database(pg: PrivatePostgres, redis_url: str = "") -> None:
    """Create, migrate and seed the bench database on a private PostgreSQL."""
    from bench import harness

    extra = {"REDIS_URL": redis_url} if redis_url else {}
    harness.prepare_database(pg.base, **extra)
