"""autobahn's per-connection DEBUG text, built only when it is logged.

autobahn's WebSocketProtocol._connectionMade passes `pformat(...)` of some forty
option values to a DEBUG record on every new connection, and the argument is
built whether DEBUG is on or not. Under py-spy, in a burst of 2,000 connects that
were all refused (`overloaded`), that pformat was 13 % of the event loop thread's
samples: the costliest single step of a refusal, and paid by every connect too.

The fix makes the module's `pformat` return an object that formats itself when a
record is rendered; with DEBUG off (txaio drops the call) it never is, with DEBUG
on the text is the same. Timings.__str__, the one caller that returns pformat's
value as a string, gets the real one. guard.py checks the release and targets first.
"""

import pprint
from typing import Any

from emergence.compat import guard

# The autobahn releases this patch was written for (as Daphne 4.2 installs them).
SERIES = "26"


class LazyPformat:
    """pprint.pformat(obj), computed when (and each time) it is formatted."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __str__(self) -> str:
        return pprint.pformat(self.obj)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def lazy_pformat(obj: Any, *args: Any, **kwargs: Any) -> Any:
    """pformat's stand-in: the plain call is deferred, any other is done now."""
    if args or kwargs:
        return pprint.pformat(obj, *args, **kwargs)
    return LazyPformat(obj)


def _timings_str(self: Any) -> str:
    return pprint.pformat(self._timings)


def apply() -> None:
    """Defer the DEBUG text once; no-op without autobahn or when applied."""
    try:
        from autobahn.websocket import protocol
    except ImportError:  # another ASGI server: nothing to patch
        return
    guard.require(protocol, "pformat", patch=__name__)
    guard.require(protocol.Timings, "__str__", patch=__name__, parameters=("self",))
    if protocol.pformat is lazy_pformat:
        return
    if not guard.version_matches("autobahn", SERIES, __name__):
        return
    protocol.pformat = lazy_pformat
    protocol.Timings.__str__ = _timings_str
