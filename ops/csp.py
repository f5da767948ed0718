"""A Content-Security-Policy header on every HTML page (Django 5.2 has none built in).

The pages load their script and stylesheet from /static/ (this origin), carry no
inline script or style (the chat page's history is a json_script block, which
is data of type application/json and never runs), and open a WebSocket to the
host they came from. The admin's pages need nothing more.
"""

from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

POLICY = "; ".join(
    [
        "default-src 'self'",
        # CSP3 lets 'self' match ws:/wss: on the same host, but browsers that
        # predate it (Safari before 15.4) do not: ws: and wss: keep the chat
        # working there. https://www.w3.org/TR/CSP3/#match-url-to-source-expression
        "connect-src 'self' ws: wss:",
        "img-src 'self' data:",  # base.html's empty favicon is a data: URL
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
HEADER = "Content-Security-Policy"


def with_policy(response: HttpResponse) -> HttpResponse:
    """The response, with the policy when it is an HTML page without one."""
    if response.get("Content-Type", "").startswith("text/html"):
        response.headers.setdefault(HEADER, POLICY)
    return response


class ContentSecurityPolicyMiddleware:
    """Set POLICY on HTML responses that do not set a policy of their own."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        return with_policy(self.get_response(request))

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        """The async twin."""
        return with_policy(await self.get_response(request))
