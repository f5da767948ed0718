"""Let Daphne send every registered WebSocket close code (PROTOCOL.md §2).

Daphne closes a socket through autobahn's sendClose(), which accepts only 1000 and
3000-4999 (django/daphne#374, crossbario/autobahn-python#1642). Our close-code table
also uses 1008, 1009, 1011, 1012 and 1013: under Daphne each of those raised inside
the consumer (an ERROR traceback, and the client saw 1011 or 1006 instead of the
code). sendCloseFrame() is the same call without that check, so the registered
codes go through it; anything else keeps Daphne's own path.
"""

# RFC 6455 section 7.4.1 and the IANA registry: codes an endpoint may send.
SENDABLE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)


def allow_registered_close_codes() -> None:
    """Patch daphne's WebSocketProtocol.serverClose once; no-op without Daphne."""
    try:
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:  # another ASGI server: nothing to patch
        return
    original = WebSocketProtocol.serverClose
    if getattr(original, "emergence_patched", False):
        return

    def server_close(self, code=None):
        if code in SENDABLE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            original(self, code=code)

    server_close.emergence_patched = True
    WebSocketProtocol.serverClose = server_close
