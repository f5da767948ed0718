"""A TCP proxy on loopback that a fault test can cut and restore, e.g. in front of
PostgreSQL, to make the database unreachable for a Daphne process and nobody else.

One thread runs a selector loop; cut() and restore() are carried out by that thread
and return once done:

- cut(): the listener is closed (new connects are refused: nothing listens on the
  port) and every proxied connection is reset on both sides (RST, SO_LINGER 0).
- restore(): listen again on the same port.
"""

import contextlib
import queue
import selectors
import socket
import struct
import threading
from collections.abc import Callable

LINGER_RESET = struct.pack("ii", 1, 0)
CHUNK = 65536


class TcpProxy:
    """Forward 127.0.0.1:<port> to a target address; cut() and restore() on demand."""

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.target = target
        self.port = 0
        self._selector = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._peers: dict[socket.socket, socket.socket] = {}
        self._commands: queue.Queue = queue.Queue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread: threading.Thread | None = None
        self._running = False
        self.accepted = 0

    # --- public API -------------------------------------------------------------------

    def start(self) -> "TcpProxy":
        self._listen()
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._running = True
        self._thread = threading.Thread(
            target=self._loop, name=f"tcp-proxy-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def cut(self) -> None:
        """Refuse new connections and reset every current one."""
        self._call(self._do_cut)

    def restore(self) -> None:
        """Accept connections again, on the same port."""
        self._call(self._do_restore)

    @property
    def is_cut(self) -> bool:
        return self._listener is None

    @property
    def connections(self) -> int:
        return len(self._peers) // 2

    def close(self) -> None:
        """Stop the proxy: reset everything and end the thread."""
        if not self._running:
            return
        self._call(self._do_cut)
        self._running = False
        self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(5)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> "TcpProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the loop thread --------------------------------------------------------------

    def _call(self, fn: Callable[[], None], timeout: float = 5.0) -> None:
        done = threading.Event()
        errors: list[BaseException] = []
        self._commands.put((fn, done, errors))
        self._wake_w.send(b"x")
        if not done.wait(timeout):
            raise TimeoutError("the proxy thread did not answer")
        if errors:
            raise errors[0]

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        self._listener = listener

    def _do_restore(self) -> None:
        if self._listener is not None:
            return
        self._listen()
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")

    def _do_cut(self) -> None:
        if self._listener is not None:
            self._selector.unregister(self._listener)
            self._listener.close()
            self._listener = None
        for sock in list(self._peers):
            self._reset(sock)

    def _loop(self) -> None:
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        while self._running:
            for key, _ in self._selector.select(timeout=0.5):
                if key.data == "wake":
                    self._drain_commands()
                elif key.data == "accept":
                    self._accept()
                else:
                    self._forward(key.fileobj)
        for sock in list(self._peers):
            self._reset(sock)

    def _drain_commands(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self._wake_r.recv(4096)
        while True:
            try:
                fn, done, errors = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                fn()
            except BaseException as exc:  # handed to the caller
                errors.append(exc)
            done.set()

    def _accept(self) -> None:
        if self._listener is None:
            return
        try:
            client, _ = self._listener.accept()
        except (BlockingIOError, OSError):
            return
        try:
            upstream = socket.create_connection(self.target, timeout=2)
        except OSError:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            client.close()
            return
        self.accepted += 1
        for sock in (client, upstream):
            sock.setblocking(True)
            sock.settimeout(5)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._peers[client] = upstream
        self._peers[upstream] = client
        self._selector.register(client, selectors.EVENT_READ, "data")
        self._selector.register(upstream, selectors.EVENT_READ, "data")

    def _forward(self, sock: socket.socket) -> None:
        peer = self._peers.get(sock)
        if peer is None:
            return
        try:
            data = sock.recv(CHUNK)
            if data:
                peer.sendall(data)
                return
        except OSError:
            self._reset(sock)
            return
        self._close_pair(sock)  # orderly end of one side: end the other too

    def _close_pair(self, sock: socket.socket) -> None:
        peer = self._peers.pop(sock, None)
        for one in (sock, peer):
            if one is None:
                continue
            self._peers.pop(one, None)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(one)
            one.close()

    def _reset(self, sock: socket.socket) -> None:
        """Close a connection and its peer with RST instead of FIN."""
        for one in (sock, self._peers.get(sock)):
            if one is None:
                continue
            with contextlib.suppress(OSError):
                one.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        self._close_pair(sock)
