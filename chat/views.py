"""The chat page and the JSON API: tokens, threads, message history (PROTOCOL.md §1)."""

import json
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from accounts import throttle, tokens
from accounts.auth import api_user
from chat import protocol
from chat.selectors import (
    messages_after,
    messages_before,
    messages_latest,
    private_threads_for_user,
    thread_get,
    thread_user_allowed,
    threads_for_user,
)
from chat.services import (
    ThreadExists,
    ThreadQuotaExceeded,
    UnknownMembers,
    thread_create,
)
from ops.http_edge import storable

MAX_HISTORY_LIMIT = 500
DEFAULT_HISTORY_LIMIT = 100
PAGE_HISTORY = 50  # messages rendered into the chat page; the socket resumes after
PAGE_THREADS = 100  # threads listed in the page's thread picker


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _json_body(request: HttpRequest) -> Any:
    """The parsed body, or None when it is not JSON (or nested past the stack)."""
    # The edge (ops/http_edge.py) refuses deep nesting first; this keeps a view
    # called without it from turning RecursionError into a 500.
    try:
        return json.loads(request.body or b"")
    except (ValueError, RecursionError):
        return None


def _thread_json(thread: Any) -> dict[str, Any]:
    return {
        "id": thread.id,
        "private": thread.private,
        "members": sorted(u.get_username() for u in thread.members.all()),
        "last_seq": thread.last_seq,
    }


@csrf_exempt
@require_POST
def token_create(request: HttpRequest) -> JsonResponse:
    """POST /api/token: a JWT for a username and password, or for a valid bearer."""
    if request.headers.get("Authorization", "").startswith("Bearer ") and not (
        request.body
    ):
        return _token_renew(request)
    body = _json_body(request)
    if not isinstance(body, dict):
        return _error(400, "body must be a JSON object")
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        return _error(400, "username and password must be strings")
    if not (storable(username) and storable(password)):
        return _error(400, "the body contains a NUL character or a lone surrogate")
    address = throttle.client_address(request)
    throttled = throttle.login_throttle_check(
        username=username, address=address, endpoint="api_token"
    )
    if throttled is not None:
        response = _error(429, "too many failed logins; try again later")
        response["Retry-After"] = str(throttled.retry_after)
        return response
    user = authenticate(request, username=username, password=password)
    if user is None:
        throttle.login_failure_record(
            username=username, address=address, endpoint="api_token"
        )
        return _error(401, "invalid credentials")
    throttle.login_success_record(username=username)
    token = tokens.token_issue(user_id=user.pk, username=user.get_username())
    return JsonResponse({"token": token, "expires_in": settings.JWT_TTL_SECONDS})


def _token_renew(request: HttpRequest) -> JsonResponse:
    """Bearer renewal: a valid, unexpired token of an active user buys a fresh one."""
    user = api_user(request)  # the bearer alone decides
    if user is None:
        return _error(401, "invalid or expired token")
    token = tokens.token_issue(user_id=user.pk, username=user.get_username())
    return JsonResponse({"token": token, "expires_in": settings.JWT_TTL_SECONDS})


def _parse_thread_body(body: Any) -> tuple[str, bool, list[str]] | str:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    thread_id = body.get("id")
    private = body.get("private", False)
    members = body.get("members", [])
    if not isinstance(thread_id, str) or not protocol.SLUG_RE.fullmatch(thread_id):
        return "id must be 1-64 characters of [A-Za-z0-9_-]"
    if not isinstance(private, bool):
        return "private must be a boolean"
    if not isinstance(members, list) or not all(
        isinstance(m, str) and storable(m) for m in members
    ):
        return "members must be a list of usernames"
    return thread_id, private, members


@csrf_exempt  # session callers are CSRF-checked in api_user; bearers need none
@require_POST
def thread_create_view(request: HttpRequest) -> JsonResponse:
    """POST /api/threads: create a thread, the caller always a member."""
    user = api_user(request)
    if user is None:
        return _error(401, "authentication required")
    parsed = _parse_thread_body(_json_body(request))
    if isinstance(parsed, str):
        return _error(400, parsed)
    thread_id, private, members = parsed
    try:
        thread = thread_create(
            thread_id=thread_id, private=private, member_usernames=members, creator=user
        )
    except UnknownMembers as exc:
        return _error(400, f"unknown members: {', '.join(exc.usernames)}")
    except ThreadExists:
        return _error(409, f"thread {thread_id!r} exists")
    except ThreadQuotaExceeded as exc:
        response = _error(429, "too many new threads; try again later")
        response["Retry-After"] = str(exc.retry_after)
        return response
    return JsonResponse(_thread_json(thread), status=201)


def _int_param(request: HttpRequest, name: str, default: int) -> int | None:
    raw = request.GET.get(name)
    if raw is None:
        return default
    if not protocol.SEQ_RE.fullmatch(raw):
        return None
    return int(raw)


@require_GET
def thread_messages(request: HttpRequest, thread_id: str) -> JsonResponse:
    """GET /api/threads/<id>/messages?after_seq=N|before_seq=N&limit=L: seq order."""
    user = api_user(request)
    if user is None:
        return _error(401, "authentication required")
    if "after_seq" in request.GET and "before_seq" in request.GET:
        return _error(400, "after_seq and before_seq cannot be combined")
    after_seq = _int_param(request, "after_seq", -1)
    before_seq = _int_param(request, "before_seq", -1)
    limit = _int_param(request, "limit", DEFAULT_HISTORY_LIMIT)
    if after_seq is None or before_seq is None or limit is None or limit < 1:
        return _error(400, "after_seq, before_seq, limit: integers >= 0, limit >= 1")
    # An id outside the alphabet names no thread: never a query with it.
    if not protocol.SLUG_RE.fullmatch(thread_id):
        return _error(404, "no such thread")
    thread = thread_get(thread_id=thread_id)
    if thread is None:
        return _error(404, "no such thread")
    if not thread_user_allowed(thread=thread, user=user):
        return _error(403, "not a member of this thread")
    limit = min(limit, MAX_HISTORY_LIMIT)
    if after_seq >= 0:
        messages = messages_after(thread_id=thread_id, after_seq=after_seq, limit=limit)
    else:  # scroll-back, or the newest `limit` when neither is given
        below = before_seq if before_seq >= 0 else None
        messages = messages_before(thread_id=thread_id, before_seq=below, limit=limit)
    return JsonResponse(
        {
            "messages": [protocol.message_frame(m) for m in messages],
            "last_seq": thread.last_seq,
            "epoch": thread.epoch,
        }
    )


@require_GET
@login_required
@never_cache
def chat_page(request: HttpRequest) -> HttpResponse:
    """GET /?thread=<id>: the web client, with the thread's newest messages inline.

    A thread id that is malformed, or private without the user, gets no history;
    the page still opens and the socket's close code (4400/4403) tells the user.
    """
    thread_id = request.GET.get("thread") or protocol.DEFAULT_THREAD
    history: list[dict[str, Any]] = []
    threads = {t.id for t in threads_for_user(user=request.user, limit=PAGE_THREADS)}
    private = private_threads_for_user(user=request.user, limit=PAGE_THREADS)
    if protocol.SLUG_RE.fullmatch(thread_id):
        thread = thread_get(thread_id=thread_id)
        if thread is None:
            threads.add(thread_id)  # created as a public thread on connect
        elif thread_user_allowed(thread=thread, user=request.user):
            threads.add(thread_id)
            history = [
                protocol.message_frame(m)
                for m in messages_latest(thread_id=thread_id, limit=PAGE_HISTORY)
            ]
    return render(
        request,
        "chat/index.html",
        {
            "thread_id": thread_id[:100],
            "threads": sorted(threads - set(private)),
            "private_threads": private,
            "history": history,
        },
    )
