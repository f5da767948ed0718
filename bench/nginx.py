"""nginx with deploy/nginx.conf in front of loopback upstreams.

A bench.servers Server like the others: the same start, log capture, readiness wait
(liveness, here through the proxy) and stop (SIGQUIT: nginx's graceful shutdown).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

from bench.servers import ROOT, Server

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
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


def site(upstream_ports: list[int], listen_port: int) -> str:
    """deploy/nginx.conf with loopback upstreams and listen address."""
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    text, servers = re.subn(
        r"server app(\d):8000",
        lambda m: f"server 127.0.0.1:{upstream_ports[int(m.group(1)) - 1]}",
        text,
    )
    text, listens = re.subn(r"listen 80;", f"listen 127.0.0.1:{listen_port};", text)
    assert (servers, listens) == (2, 1), "deploy/nginx.conf changed shape"
    return text


class Nginx(Server):
    """nginx in the foreground, its pid, logs and temp files under `workdir`."""

    kind = "nginx"
    start_timeout = 10.0
    stop_timeout = 10.0
    stop_signal = signal.SIGQUIT

    def __init__(self, workdir: Path, upstream_ports: list[int]) -> None:
        # No root needed and nothing under /var: everything lives in workdir.
        super().__init__(workdir.name, None, workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "emergence.conf").write_text(site(upstream_ports, self.port))
        # As root, workers would drop to `nobody`, who cannot enter pytest's tmp dir.
        user = "user root;" if os.geteuid() == 0 else ""
        self.conf = workdir / "nginx.conf"
        self.conf.write_text(MAIN_CONF.format(d=workdir, user=user))

    @property
    def log_path(self) -> Path:
        # nginx's own error log (-e), where its stderr goes too.
        return self.log_dir / "error.log"

    def command(self, *extra: str) -> list[str]:
        return [
            NGINX,
            "-p",
            str(self.log_dir),
            "-c",
            str(self.conf),
            "-e",
            str(self.log_path),
            *extra,
        ]

    def test_config(self) -> str:
        """`nginx -t` on the configuration; its report (it must pass)."""
        done = subprocess.run(
            self.command("-t"), capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        return done.stderr

    def access_lines(self) -> list[str]:
        path = self.log_dir / "access.log"
        return path.read_text().splitlines() if path.exists() else []
