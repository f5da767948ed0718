"""Reason phrases Twisted lacks (429 among them), filled in from Python's table.

Daphne sends a response's status line through twisted.web.http.Request's
setResponseCode(code), which looks the phrase up in twisted.web.http.RESPONSES and
writes "Unknown Status" for a code missing there. Twisted's table has no 429 (RFC
6585) nor 422, 428, 431, 451 and a few more, so the login throttle's answer went
out as "HTTP/1.1 429 Unknown Status": clients act on the code, but proxies, access
logs and people read the phrase.

The fix adds http.HTTPStatus's phrase for every code the table lacks, never
changing one it has, to the table object itself (setResponseCode reads it at each
call). guard.py checks the release series and the lookup's shape first.
"""

import http
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from emergence.compat import guard

# The Twisted releases this patch was written for (26.x, as Daphne 4.2 installs it).
SERIES = "26"


def missing_phrases(responses: dict[int, bytes]) -> dict[int, bytes]:
    """Python's reason phrase of every status code `responses` does not name."""
    return {
        status.value: status.phrase.encode("ascii")
        for status in http.HTTPStatus
        if status.value not in responses
    }


def apply() -> None:
    """Fill the gaps in Twisted's reason phrases once; no-op without Twisted."""
    try:
        from twisted.web import http as twisted_http
    except ImportError:  # another ASGI server: nothing to patch
        return
    responses = check_targets(twisted_http)
    missing = missing_phrases(responses)
    if not missing:  # applied already, or a release that has every phrase
        return
    if not guard.version_matches("twisted", SERIES, __name__):
        return
    responses.update(missing)


def check_targets(module: Any) -> dict[int, bytes]:
    """The table setResponseCode reads, and setResponseCode taking a code only."""
    guard.require(
        module.Request,
        "setResponseCode",
        patch=__name__,
        parameters=("self", "code", "message"),
    )
    responses = guard.require(module, "RESPONSES", patch=__name__)
    if not isinstance(responses, dict):
        raise ImproperlyConfigured(
            f"{__name__}: twisted.web.http.RESPONSES is not a dict of reason phrases"
        )
    return responses
