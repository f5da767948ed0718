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

`hltype` and `hlval` (a qualified name or a value, coloured through click.style)
are deferred alike in the two modules Daphne runs: each of their uses there is an
argument of a log call, a dozen per connection and three per frame sent.
"""

import pprint
from collections.abc import Callable
from typing import Any

from emergence.compat import guard

try:
    from autobahn import util
except ImportError:  # another ASGI server: apply() patches nothing
    util = None

# The autobahn releases this patch was written for (as Daphne 4.2 installs them).
SERIES = "26"


class LazyText:
    """function(*args), computed when (and each time) it is formatted."""

    __slots__ = ("function", "args")

    def __init__(self, function: Callable[..., str], *args: Any) -> None:
        self.function = function
        self.args = args

    def __str__(self) -> str:
        return self.function(*self.args)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def lazy_pformat(obj: Any, *args: Any, **kwargs: Any) -> Any:
    """pformat's stand-in: the plain call is deferred, any other is done now."""
    if args or kwargs:
        return pprint.pformat(obj, *args, **kwargs)
    return LazyText(pprint.pformat, obj)


def lazy_hltype(obj: Any) -> LazyText:
    """autobahn.util.hltype's stand-in, deferred."""
    return LazyText(util.hltype, obj)


def lazy_hlval(val: Any, *args: Any, **kwargs: Any) -> Any:
    """autobahn.util.hlval's stand-in: the plain call deferred, any other done now."""
    if args or kwargs:
        return util.hlval(val, *args, **kwargs)
    return LazyText(util.hlval, val)


def _timings_str(self: Any) -> str:
    return pprint.pformat(self._timings)


def apply() -> None:
    """Defer the DEBUG text once; no-op without autobahn or when applied."""
    try:
        from autobahn.twisted import websocket
        from autobahn.websocket import protocol
    except ImportError:  # another ASGI server: nothing to patch
        return
    guard.require(protocol, "pformat", patch=__name__)
    guard.require(protocol.Timings, "__str__", patch=__name__, parameters=("self",))
    for module in (protocol, websocket):
        guard.require(module, "hltype", patch=__name__, parameters=("obj",))
        guard.require(module, "hlval", patch=__name__)
    if protocol.pformat is lazy_pformat:
        return
    if not guard.version_matches("autobahn", SERIES, __name__):
        return
    protocol.pformat = lazy_pformat
    protocol.Timings.__str__ = _timings_str
    for module in (protocol, websocket):
        module.hltype, module.hlval = lazy_hltype, lazy_hlval
