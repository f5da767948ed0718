"""WebSocket middleware (origin, DB health, auth) and the HTTP DB-health twin."""

import asyncio
import json
import logging
import time

import pytest
from asgiref.testing import ApplicationCommunicator
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.contrib import auth
from django.test import Client
from django.utils import timezone

from accounts.middleware import (
    AllowedHostsOriginValidator,
    AuthMiddlewareStack,
    scope_login,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]


async def scope_echo(scope, receive, send):
    """A bare ASGI app: accept, then look the user up and report the scope."""
    message = await receive()
    assert message["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    user = (await scope_login(scope)).user
    assert scope["user"]._wrapped is user
    await send(
        {
            "type": "websocket.send",
            "text": json.dumps(
                {
                    "user": user.get_username() if user.is_authenticated else None,
                    "db_unavailable": bool(scope.get("db_unavailable")),
                    "has_session": "session" in scope,
                }
            ),
        }
    )
    while (await receive())["type"] != "websocket.disconnect":
        pass


class Communicator(WebsocketCommunicator):
    """Without channels' close_old_connections no-op (see tests/chat/test_consumers)."""

    async def send_input(self, message):
        return await ApplicationCommunicator.send_input(self, message)

    async def receive_output(self, timeout=1):
        return await ApplicationCommunicator.receive_output(self, timeout)


@pytest.fixture
async def echo(fresh_channel_layer):
    """Connect through origin check + AuthMiddlewareStack to scope_echo."""
    opened = []

    async def connect(headers=None, subprotocols=None):
        app = AllowedHostsOriginValidator(AuthMiddlewareStack(scope_echo))
        comm = Communicator(app, "/ws/x/", headers=headers, subprotocols=subprotocols)
        opened.append(comm)
        connected, _ = await comm.connect(5)
        if not connected:
            return None
        return json.loads(await comm.receive_from(5))

    yield connect
    # channels' origin denier is a consumer with a channel-layer receive(); hanging
    # up in its first milliseconds can wedge it (see Socket.close in test_consumers).
    await asyncio.sleep(0.1)
    for comm in opened:
        await comm.disconnect(timeout=5)


@pytest.fixture
def cookie_for():
    def cookie(user) -> tuple[bytes, bytes]:
        client = Client()
        client.force_login(user)
        name = django_settings.SESSION_COOKIE_NAME
        return (b"cookie", f"{name}={client.cookies[name].value}".encode())

    return cookie


# --- origin -------------------------------------------------------------------------


async def test_no_origin_is_admitted(echo):
    assert await echo() == {"user": None, "db_unavailable": False, "has_session": True}


@pytest.mark.parametrize(
    "origin",
    [
        b"http://localhost",
        b"http://localhost:8000",
        b"https://127.0.0.1:9",
        b"http://[::1]",
    ],
)
async def test_allowed_origins(echo, origin):
    assert await echo(headers=[(b"origin", origin)]) is not None


@pytest.mark.parametrize(
    "origin",
    [
        b"http://evil.example",
        b"http://localhost.evil.example",
        b"http://127.0.0.2",
        b"null",
        b"not a url",
    ],
)
async def test_foreign_origins_are_refused(echo, origin):
    assert await echo(headers=[(b"origin", origin)]) is None


async def test_origin_follows_allowed_hosts(echo, settings):
    settings.ALLOWED_HOSTS = ["chat.example.com"]
    assert await echo(headers=[(b"origin", b"https://chat.example.com")]) is not None
    assert await echo(headers=[(b"origin", b"http://localhost")]) is None


# --- auth ---------------------------------------------------------------------------


async def test_jwt_subprotocol_resolves_the_user(echo, alice, token_for):
    scope = await echo(subprotocols=["jwt", token_for(alice)])
    assert scope["user"] == "alice"


async def test_session_cookie_resolves_the_user(echo, alice, cookie_for):
    cookie = await database_sync_to_async(cookie_for)(alice)
    assert (await echo(headers=[cookie]))["user"] == "alice"


@pytest.mark.parametrize(
    "subprotocols",
    [None, ["jwt"], ["jwt", "junk"], ["chat"], ["chat", "jwt"]],
)
async def test_no_valid_credentials_is_anonymous(echo, subprotocols):
    assert (await echo(subprotocols=subprotocols))["user"] is None


async def test_jwt_must_be_the_first_subprotocol(echo, alice, token_for):
    scope = await echo(subprotocols=["chat", "jwt", token_for(alice)])
    assert scope["user"] is None


async def test_jwt_wins_over_the_cookie(echo, alice, bob, token_for, cookie_for):
    cookie = await database_sync_to_async(cookie_for)(alice)
    scope = await echo(headers=[cookie], subprotocols=["jwt", token_for(bob)])
    assert scope["user"] == "bob"


async def test_bad_jwt_is_not_rescued_by_a_cookie(echo, alice, cookie_for):
    cookie = await database_sync_to_async(cookie_for)(alice)
    scope = await echo(headers=[cookie], subprotocols=["jwt", "garbage"])
    assert scope["user"] is None


async def test_expired_jwt_is_anonymous(echo, alice, token_for):
    scope = await echo(subprotocols=["jwt", token_for(alice, ttl_seconds=-1)])
    assert scope["user"] is None


async def test_inactive_users_token_is_anonymous(echo, make_user, token_for):
    user = await database_sync_to_async(make_user)("dormant", is_active=False)
    assert (await echo(subprotocols=["jwt", token_for(user)]))["user"] is None


async def test_unknown_session_cookie_is_anonymous(echo):
    name = django_settings.SESSION_COOKIE_NAME
    scope = await echo(headers=[(b"cookie", f"{name}=bogus".encode())])
    assert scope["user"] is None


# --- DB health (WebSocket) ----------------------------------------------------------


async def test_database_outage_marks_the_scope(
    echo, alice, token_for, db_outage, caplog
):
    caplog.set_level(logging.INFO)
    token = token_for(alice)
    db_outage.start()
    started = time.monotonic()
    scope = await echo(subprotocols=["jwt", token])
    assert time.monotonic() - started < 3
    # The socket is still handed on (the consumer answers 1013), with no user.
    assert scope == {"user": None, "db_unavailable": True, "has_session": True}
    gave_up = [r for r in caplog.records if getattr(r, "event", "") == "db_unavailable"]
    assert [(r.op, r.levelno) for r in gave_up] == [("ws_auth", logging.ERROR)]
    lost = [
        r for r in caplog.records if getattr(r, "event", "") == "db_connection_lost"
    ]
    assert [r.attempt for r in lost] == [1, 2, 3]


async def test_database_back_after_an_outage(echo, alice, token_for, db_outage):
    token = token_for(alice)
    db_outage.start()
    assert (await echo(subprotocols=["jwt", token]))["db_unavailable"] is True
    db_outage.end()
    scope = await echo(subprotocols=["jwt", token])
    assert scope == {"user": "alice", "db_unavailable": False, "has_session": True}


# --- DB health (HTTP) ---------------------------------------------------------------


def test_http_request_during_an_outage_is_503(client, alice, token_for, db_outage):
    headers = {"Authorization": f"Bearer {token_for(alice)}"}
    db_outage.start()
    response = client.get("/api/threads/main/messages", headers=headers)
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json() == {
        "error": "db_unavailable",
        "detail": "database unavailable",
    }
    db_outage.end()
    response = client.get("/api/threads/main/messages", headers=headers)
    assert response.status_code == 404  # the view ran: no such thread


@pytest.mark.parametrize("path", ["/health/liveness", "/api/health"])
def test_health_paths_skip_the_database_ping(client, db_outage, path):
    db_outage.start()
    assert client.get(path).status_code == 200


# --- many sockets at once: one lookup -----------------------------------------------


def _session_key(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[django_settings.SESSION_COOKIE_NAME].value


def _store(key: str):
    from django.contrib.sessions.backends.db import SessionStore

    return SessionStore(key)


def test_resolve_many_keeps_djangos_rules_in_two_queries(
    make_user, django_assert_num_queries
):
    from django.contrib.sessions.models import Session

    from accounts.middleware import Credential, users_resolve_many

    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    dormant = make_user("dormant", is_active=False)
    keys = {u.username: _session_key(u) for u in (alice, bob, carol)}
    Session.objects.filter(pk=keys["carol"]).update(expire_date=timezone.now())
    bob.is_active = False
    bob.save()
    anonymous_session = _store(None)
    anonymous_session["something"] = 1
    anonymous_session.save()
    credentials = [
        Credential(session=_store(keys["alice"])),
        Credential(session=_store(keys["bob"])),  # inactive since
        Credential(session=_store(keys["carol"])),  # expired
        Credential(session=_store("x" * 32)),  # unknown
        Credential(session=_store(anonymous_session.session_key)),  # no user
        Credential(user_id=alice.pk),
        Credential(user_id=dormant.pk),
        Credential(user_id=10**9),
        Credential(session=_store(keys["alice"])),  # a second tab
    ]
    with django_assert_num_queries(2):
        users = users_resolve_many(credentials=credentials)
    names = [u.get_username() if u.is_authenticated else None for u in users]
    assert names == ["alice", None, None, None, None, "alice", None, None, "alice"]
    # The sessions were loaded as Django loads them: nothing more to read.
    with django_assert_num_queries(0):
        assert credentials[0].session[auth.SESSION_KEY] == str(alice.pk)
        assert credentials[3].session.session_key is None


def test_resolve_many_session_hash_check(make_user, settings):
    from django.contrib.sessions.models import Session

    from accounts.middleware import Credential, users_resolve_many

    alice, bob = make_user("alice"), make_user("bob")
    changed, rotated = _session_key(alice), _session_key(bob)
    alice.set_password("another-Passw0rd")
    alice.save()
    # bob's session hash was made with a key that is now only a fallback.
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-new-secret-key-0123456789abcdef-0123456789abcdef"
    stores = [_store(changed), _store(rotated)]
    gone, kept = users_resolve_many(credentials=[Credential(session=s) for s in stores])
    # As django.contrib.auth.get_user: a changed password ends the session...
    assert not gone.is_authenticated
    assert not Session.objects.filter(pk=changed).exists()
    # ... a rotated secret renews it (a new key, the hash of the current secret).
    assert kept == bob
    assert stores[1].session_key != rotated
    assert stores[1][auth.HASH_SESSION_KEY] == bob.get_session_auth_hash()


@pytest.fixture
def lookup_sizes(monkeypatch):
    """The size of every users_resolve_many call (one per DB round)."""
    from accounts import middleware

    sizes: list[int] = []
    real = middleware.users_resolve_many

    def counting(*, credentials):
        sizes.append(len(credentials))
        return real(credentials=credentials)

    monkeypatch.setattr(middleware, "users_resolve_many", counting)
    return sizes


async def test_sockets_at_once_share_one_lookup(
    echo, make_user, token_for, cookie_for, lookup_sizes
):
    users = [await database_sync_to_async(make_user)(f"u{i}") for i in range(12)]
    cookies = [await database_sync_to_async(cookie_for)(u) for u in users[:6]]
    opened = await asyncio.gather(
        *(echo(headers=[cookie]) for cookie in cookies),
        *(echo(subprotocols=["jwt", token_for(u)]) for u in users[6:]),
        echo(subprotocols=["jwt", "junk"]),  # no lookup at all
    )
    assert [s["user"] for s in opened] == [u.username for u in users] + [None]
    assert sum(lookup_sizes) == 12 and max(lookup_sizes) > 1, lookup_sizes


async def test_outage_marks_every_scope_of_a_burst(
    echo, make_user, token_for, db_outage, log_events
):
    users = [await database_sync_to_async(make_user)(f"u{i}") for i in range(8)]
    db_outage.start()
    opened = await asyncio.gather(
        *(echo(subprotocols=["jwt", token_for(u)]) for u in users)
    )
    assert all(
        s == {"user": None, "db_unavailable": True, "has_session": True} for s in opened
    )
    gave_up = log_events("db_unavailable")
    assert 1 <= len(gave_up) < len(users)  # once per lookup round, not per socket
    assert {r.op for r in gave_up} == {"ws_auth"}
