"""HTTP input checked at the edge, before any view (PROTOCOL.md §1, bad input).

What PostgreSQL text cannot store (NUL; lone surrogates, which UTF-8 cannot
encode) never reaches a view or a query: psycopg refuses it with an error that
would be a 500. A path, query string or /api/ JSON body carrying it is refused
with 400, a JSON body nested deeper than MAX_JSON_DEPTH too, and a body over
DATA_UPLOAD_MAX_MEMORY_SIZE with 413. A cookie carrying it is dropped: a cookie
that cannot name a session is no session, so the request goes on anonymous.
Refusals on /api/ have a JSON body {"error": ...}, elsewhere a small HTML page.
"""

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.utils.html import escape

# NUL: "PostgreSQL text fields cannot contain NUL (0x00) bytes" (psycopg DataError).
# U+D800-U+DFFF: a surrogate left alone in a str (JSON's "\ud800") has no UTF-8
# encoding, so the driver cannot even send it (UnicodeEncodeError).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
API_PREFIX = "/api/"
# Our bodies nest two levels; json.loads itself gives up near the recursion limit.
MAX_JSON_DEPTH = 32
# Bigger bodies are checked on a worker thread, off the event loop.
INLINE_CHECK_BYTES = 64 * 1024


@dataclass(frozen=True)
class Refusal:
    """A request refused at the edge: its status and what is wrong with it."""

    status: int
    message: str


def storable(text: str) -> bool:
    """Whether PostgreSQL text can hold this string: no NUL, no lone surrogate."""
    return _UNSTORABLE.search(text) is None


def session_key_usable(key: str | None) -> bool:
    """Whether a session cookie's value can name a stored session at all."""
    return key is not None and storable(key)


def _unstorable_in(where: str) -> Refusal:
    return Refusal(400, f"{where} contains a NUL character or a lone surrogate")


def _drop_unstorable_cookies(request: HttpRequest) -> None:
    """Forget cookies no store can hold: the session cookie above all (anonymous)."""
    # SessionMiddleware and CsrfViewMiddleware read request.COOKIES, a dict parsed
    # once per request (a cached property of Django's request classes).
    cookies = request.COOKIES
    for name in [n for n, v in cookies.items() if not (storable(n) and storable(v))]:
        del cookies[name]


def _json_depth_or_unstorable(data: Any) -> Refusal | None:
    """Walk parsed JSON iteratively: too deep, or a string that cannot be stored."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if not storable(value):
                return _unstorable_in("the body")
        elif isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                return Refusal(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(value, dict):
                if not all(storable(key) for key in value):
                    return _unstorable_in("the body")
                value = value.values()
            stack.extend((item, depth + 1) for item in value)
    return None


def _json_body_refusal(body: bytes) -> Refusal | None:
    """A refusal for an /api/ body; None when the view may read it (even malformed)."""
    if not body:
        return None
    try:
        data = json.loads(body)
    except RecursionError:
        return Refusal(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    except ValueError:  # not JSON (UnicodeDecodeError included): the view says so
        return None
    return _json_depth_or_unstorable(data)


def _content_length(request: HttpRequest) -> int | None:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None


def _too_big() -> Refusal:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return Refusal(413, f"request body too large (over {limit} bytes)")


def _head_refusal(request: HttpRequest) -> Refusal | None:
    """Path, query string, cookies and the announced body size: no body read."""
    _drop_unstorable_cookies(request)
    if not storable(request.path):
        return _unstorable_in("the path")
    if not storable(unquote_plus(request.META.get("QUERY_STRING", ""))):
        return _unstorable_in("the query string")
    try:
        request.GET  # noqa: B018 - parsed for its exceptions (too many fields)
    except SuspiciousOperation as exc:
        return Refusal(400, str(exc))
    length = _content_length(request)
    if length is None:
        return Refusal(400, "Content-Length is not a number")
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if limit is not None and length > limit:
        return _too_big()
    return None


def _body_refusal(request: HttpRequest) -> Refusal | None:
    """An /api/ body: its real size (chunked bodies have no length), then its JSON."""
    if not request.path.startswith(API_PREFIX):
        return None
    try:
        body = request.body
        # A form body is parsed here, not in a view, so that too many fields or a
        # broken multipart body is a JSON 400 like every other /api/ refusal.
        request.POST  # noqa: B018 - parsed for its exceptions
    except RequestDataTooBig:
        return _too_big()
    except (SuspiciousOperation, MultiPartParserError) as exc:
        return Refusal(400, str(exc))
    return _json_body_refusal(body)


def _response(request: HttpRequest, refusal: Refusal) -> HttpResponse:
    if request.path.startswith(API_PREFIX):
        return JsonResponse({"error": refusal.message}, status=refusal.status)
    response = HttpResponse(status=refusal.status, content_type="text/html")
    title = f"{response.reason_phrase} ({refusal.status})"
    response.content = (
        f'<!doctype html>\n<html lang="en"><title>{title}</title>\n'
        f"<h1>{title}</h1>\n<p>{escape(refusal.message)}</p></html>\n"
    )
    return response


class HttpEdgeMiddleware:
    """Refuse input no view could store (400/413); drop cookies that name nothing."""

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
        refusal = _head_refusal(request) or _body_refusal(request)
        if refusal is not None:
            return _response(request, refusal)
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        """The async twin: a big body is parsed on a worker thread."""
        refusal = _head_refusal(request)
        if refusal is None:
            if (_content_length(request) or 0) > INLINE_CHECK_BYTES:
                check = sync_to_async(_body_refusal, thread_sensitive=False)
                refusal = await check(request)
            else:
                refusal = _body_refusal(request)
        if refusal is not None:
            return _response(request, refusal)
        return await self.get_response(request)
