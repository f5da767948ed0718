"""A socket's login after its accept: the deferred lookup, token expiry, `refresh`,
and 4401 for a user deactivated or a session logged out (through the whole stack)."""

import asyncio
import time
import uuid
from datetime import datetime

import pytest
from channels.db import database_sync_to_async
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.test import Client

from accounts import middleware
from accounts.signals import login_revoked
from chat import logins
from ops.batching import Coalescer
from realtime.groups import user_group
from tests.chat import test_consumers

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]

# The fixtures of the consumer tests: sockets through the whole ASGI app.
open_socket = test_consumers.open_socket
join = test_consumers.join
THREAD = f"logins-{uuid.uuid4().hex[:12]}"
# PROTOCOL.md: closed "within 5 s after its token's exp"; bounded generously here.
EXPIRY_BOUND = 5 + 5


def path(session_id: str) -> str:
    """A socket URL in a thread of this test run's own: the test Redis is shared
    by concurrent runs, whose messages in `main` would reach these sockets."""
    return f"/ws/{session_id}/?thread_id={THREAD}"


def _cookie(client: Client) -> tuple[bytes, bytes]:
    name = django_settings.SESSION_COOKIE_NAME
    return (b"cookie", f"{name}={client.cookies[name].value}".encode())


@database_sync_to_async
def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@database_sync_to_async
def deactivate(user_id: int, **save_kwargs) -> None:
    user = get_user_model().objects.get(pk=user_id)
    user.is_active = False
    user.save(**save_kwargs)


@pytest.fixture
def revocations():
    """Every login_revoked sent during the test, as (user_id, session_key)."""
    sent: list[tuple] = []

    def record(sender, user_id=None, session_key=None, **kwargs):
        sent.append((user_id, session_key))

    login_revoked.connect(record)
    yield sent
    login_revoked.disconnect(record)


# --- the accept does not wait for the lookup ------------------------------------------


async def test_accept_comes_before_the_user_lookup(
    open_socket, alice, token_for, monkeypatch
):
    release = asyncio.Event()
    real = middleware._lookup_many

    async def held(credentials):
        await release.wait()
        return await real(credentials)

    monkeypatch.setattr(middleware, "_lookups", Coalescer(held))
    try:
        socket = await open_socket(path("s1"), subprotocols=["jwt", token_for(alice)])
        assert socket.connected is True  # accepted while the lookup is held
        await socket.silent()
    finally:
        release.set()
    hello = await socket.recv()
    assert (hello["type"], hello["user"]) == ("ws:session_established", "alice")


# --- token expiry and refresh ---------------------------------------------------------


async def test_expired_token_closes_the_open_socket_4401(open_socket, alice, token_for):
    token = token_for(alice, ttl_seconds=2)
    exp = time.time() + 2
    socket = await established(open_socket, token)
    assert await socket.closed_with(timeout=EXPIRY_BOUND + 5) == 4401
    assert time.time() >= exp - 1  # not before the token expired


async def test_refresh_keeps_the_socket_open_past_the_first_exp(
    open_socket, alice, token_for
):
    socket = await established(open_socket, token_for(alice, ttl_seconds=2))
    fresh = token_for(alice, ttl_seconds=120)
    await socket.send({"type": "refresh", "token": fresh})
    answer = await socket.recv()
    assert answer["type"] == "refreshed", answer
    expires_at = datetime.fromisoformat(answer["expires_at"])
    assert expires_at.tzinfo is not None
    assert 100 < expires_at.timestamp() - time.time() <= 121
    await socket.silent(timeout=4)  # the first token's exp has passed
    await socket.send({"type": "ping", "ts": 1})
    assert await socket.recv() == {"type": "pong", "ts": 1}


async def test_refresh_with_another_users_token_is_bad_token(
    open_socket, alice, bob, token_for
):
    socket = await established(open_socket, token_for(alice))
    for token in (token_for(bob), token_for(alice, ttl_seconds=-1), "garbage"):
        await socket.send({"type": "refresh", "token": token})
        error = await socket.recv()
        assert (error["type"], error["code"]) == ("error", "bad_token"), error
    await socket.send({"type": "ping", "ts": 2})
    assert await socket.recv() == {"type": "pong", "ts": 2}


async def test_refresh_without_a_token_is_bad_frame(join, alice):
    socket, _ = await join(alice, thread_id=THREAD)
    await socket.send({"type": "refresh"})
    error = await socket.recv()
    assert (error["type"], error["code"]) == ("error", "bad_frame"), error


async def test_refresh_on_a_cookie_socket_is_bad_token(open_socket, alice, token_for):
    client = await logged_in(alice)
    socket = await open_socket(path("s1"), headers=[_cookie(client)])
    assert (await socket.recv())["type"] == "ws:session_established"
    await socket.send({"type": "refresh", "token": token_for(alice)})
    error = await socket.recv()
    assert (error["type"], error["code"]) == ("error", "bad_token"), error


async def established(open_socket, token: str, session_id: str = "s1"):
    """An open JWT socket with this token, its ws:session_established read."""
    socket = await open_socket(path(session_id), subprotocols=["jwt", token])
    assert (await socket.recv())["type"] == "ws:session_established"
    return socket


# --- revocation: a user deactivated, a session logged out -----------------------------


async def test_deactivated_user_sockets_close_4401(
    open_socket, alice, bob, token_for, revocations
):
    jwt_socket = await established(open_socket, token_for(alice))
    client = await logged_in(alice)
    cookie_socket = await open_socket(path("s2"), headers=[_cookie(client)])
    assert (await cookie_socket.recv())["type"] == "ws:session_established"
    other = await established(open_socket, token_for(bob), "s3")
    await deactivate(alice.pk)
    assert revocations == [(alice.pk, None)]
    assert await jwt_socket.closed_with() == 4401
    assert await cookie_socket.closed_with() == 4401
    await other.silent()


async def test_saves_that_keep_the_user_active_revoke_nothing(
    open_socket, alice, token_for, revocations
):
    socket = await established(open_socket, token_for(alice))

    @database_sync_to_async
    def resave() -> None:
        user = get_user_model().objects.get(pk=alice.pk)
        user.first_name = "Alice"
        user.save()
        user.save(update_fields=["first_name"])

    await resave()
    await deactivate(alice.pk, update_fields=["first_name"])  # is_active not saved
    assert revocations == []
    await socket.silent()


async def test_saving_an_inactive_user_again_revokes_once(alice, revocations):
    await deactivate(alice.pk)

    @database_sync_to_async
    def resave() -> None:
        get_user_model().objects.get(pk=alice.pk).save()

    await resave()
    assert revocations == [(alice.pk, None)]


async def test_logout_closes_that_sessions_sockets_4401(
    open_socket, alice, revocations
):
    leaving, staying = await logged_in(alice), await logged_in(alice)
    closing = await open_socket(path("s1"), headers=[_cookie(leaving)])
    kept = await open_socket(path("s2"), headers=[_cookie(staying)])
    for socket in (closing, kept):
        assert (await socket.recv())["type"] == "ws:session_established"
    await database_sync_to_async(leaving.logout)()
    assert len(revocations) == 1 and revocations[0][1]
    assert await closing.closed_with() == 4401
    await kept.silent()


async def test_revocation_sent_from_inside_the_event_loop(
    open_socket, alice, token_for
):
    """Async code (no async_to_sync possible in a loop's thread) publishes as a task."""
    socket = await established(open_socket, token_for(alice))
    logins._publish([user_group(alice.pk)])
    assert await socket.closed_with() == 4401
