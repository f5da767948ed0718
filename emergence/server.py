"""Daphne entry point: `python -m emergence.server [daphne options] APP`.

Daphne's own command line (every option, same meaning), except that its access log
goes through logging (logger `daphne.access`, one structured record per request or
WebSocket step) instead of being written raw to stdout: with LOG_FORMAT=json it is
JSON like every other line. Daphne keeps an access log when it would write one
(verbosity >= 1 or --access-log); the logging configuration decides where it goes
(ACCESS_LOG=false silences it). Once the application is loaded and before it serves,
the server moves log writing to a thread (LOG_QUEUE) and freezes the objects loaded
so far out of the garbage collector's full passes.
"""

import gc
import logging
from typing import Any

from daphne.cli import CommandLineInterface
from daphne.server import Server

from ops import logs

access_logger = logging.getLogger("daphne.access")


class AccessLog:
    """Daphne's action-logger interface, turned into `daphne.access` records."""

    def __call__(self, protocol: str, action: str, details: dict[str, Any]) -> None:
        client = details.get("client") or "-"
        path = details.get("path", "")
        if protocol == "http" and action == "complete":
            duration = float(details.get("time_taken") or 0.0)
            access_logger.info(
                '%s "%s %s" %s %s %.3fs',
                client,
                details.get("method", ""),
                path,
                details.get("status"),
                details.get("size"),
                duration,
                extra={
                    "event": "http_access",
                    "client": client,
                    "method": details.get("method"),
                    "path": path,
                    "status": details.get("status"),
                    "size": details.get("size"),
                    "duration_s": round(duration, 4),
                },
            )
        elif protocol == "websocket":
            access_logger.info(
                '%s "WS%s %s"',
                client,
                action.upper(),
                path,
                extra={
                    "event": "ws_access",
                    "action": action,
                    "client": client,
                    "path": path,
                },
            )


# gc.set_threshold's three: allocations less deallocations between collections of
# the youngest generation, then collections of each generation between collections
# of the next. Measured against the default and (10,000, 10, 10) in docs/BENCHMARKS.md.
GC_THRESHOLDS = (10_000, 1, 100)


def prepare_to_serve() -> None:
    """Ready a process whose application is loaded to serve: log queue, gc freeze."""
    # Log writes leave the event loop here and only here (ops/logs.py says why).
    logs.start_log_queue()
    # Everything loaded so far lives as long as the process: keep it out of the
    # collector's full passes. A full collection of a Daphne holding 1,000 sockets
    # paused the loop for 100-260 ms, about a third of it spent re-scanning these
    # objects.
    gc.freeze()
    # A socket's objects live as long as the socket, and a connect allocates a few
    # thousand: with the default (700, 10, 10) a 2,000-socket connect storm ran ~15
    # full collections (~190 ms each, the loop stopped) to free almost nothing.
    # Young objects are collected every 10,000 allocations, their survivors moved
    # on at every other pass (short pauses), and a full pass waits for 100 of those
    # as well as for the 25 % rule (https://docs.python.org/3/library/gc.html).
    gc.set_threshold(*GC_THRESHOLDS)


def frame_limit(configured: int) -> int:
    """Daphne's frame and message limit: never below WS_MAX_MESSAGE_BYTES."""
    from django.conf import settings  # the CLI has set Django up by now

    # The consumer answers a frame over WS_MAX_MESSAGE_BYTES with 1009 itself;
    # autobahn (1 MiB in Daphne) answers 1009 only for what never reaches it
    # (emergence.compat.daphne_frames). 0 means no limit to autobahn: keep one.
    return max(configured, settings.WS_MAX_MESSAGE_BYTES)


# Twisted listens with a backlog of 50. In a reconnect storm that queue overflows,
# the kernel drops the SYNs past it, and their clients retry only after 1, 3, 7 s
# (TCP's retransmit timer): on one process, 2,000 clients retrying every 0.2-1 s met
# 981 handshake timeouts with 50 and 22 with 1,024. The kernel caps the value at
# net.core.somaxconn (4,096 on Linux 5.4 and later).
LISTEN_BACKLOG = 1024


def with_backlog(endpoint: str, backlog: int = LISTEN_BACKLOG) -> str:
    """A tcp: or unix: endpoint description with a listen backlog, unless it has one."""
    kind = endpoint.split(":", 1)[0]
    if kind not in ("tcp", "tcp6", "unix") or ":backlog=" in endpoint:
        return endpoint
    return f"{endpoint}:backlog={backlog}"


class LoggingServer(Server):
    """Daphne's server: AccessLog for its access log, the process readied to serve."""

    def __init__(self, *args: Any, action_logger: Any = None, **kwargs: Any) -> None:
        if action_logger is not None:
            action_logger = AccessLog()
        super().__init__(*args, action_logger=action_logger, **kwargs)
        self.endpoints = [with_backlog(e) for e in self.endpoints]
        self.websocket_max_message_size = frame_limit(self.websocket_max_message_size)
        self.websocket_max_frame_size = frame_limit(self.websocket_max_frame_size)

    def run(self) -> None:
        """Start the log queue, freeze the loaded objects, then serve."""
        # Daphne's CLI has loaded the application (Django set up) by now.
        prepare_to_serve()
        super().run()


class LoggingCommandLineInterface(CommandLineInterface):
    """daphne's CLI, serving with LoggingServer."""

    server_class = LoggingServer


def main() -> None:
    """Run Daphne from the command line."""
    LoggingCommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
