"""What one client can make the server do: bounded metric labels, error ids, replays.

Through the full ASGI app (channels' WebsocketCommunicator), on the real
PostgreSQL and Redis; the Daphne-level proofs are in tests/e2e/test_abuse_daphne.py.
"""

import json
import logging
import time

import pytest

from chat import protocol, sockets
from chat.models import Thread
from ops import metrics
from ops.db import DatabaseUnavailable
from tests.chat import test_consumers as base

# The endpoint fixtures of the consumer tests, shared rather than copied.
open_socket = base.open_socket
join = base.join
stored = base.stored
chat = base.chat
disconnect_records = base.disconnect_records
db_read = base.db_read

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]


def reason_labels() -> set[str]:
    """The `reason` label values the DISCONNECTS counter holds in this process."""
    return {
        sample.labels["reason"]
        for family in metrics.DISCONNECTS.collect()
        for sample in family.samples
    }


def no_errors(caplog) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors


# --- metric labels ------------------------------------------------------------------


def test_metric_reason_is_bounded():
    assert protocol.metric_reason(1006) == "abnormal_closure"
    assert protocol.metric_reason(4408) == "slow_consumer"
    assert protocol.metric_reason(4429) == "too_many"
    assert protocol.metric_reason(1007) == "invalid_payload"
    assert protocol.metric_reason(None) == "no_status"
    assert protocol.metric_reason(3999) == "other"
    assert protocol.metric_outcome(4403) == "4403"
    assert protocol.metric_outcome(4321) == "other"
    # The log record keeps the code itself (PROTOCOL.md §3).
    assert protocol.reason_for(4321)[0] == "code_4321"


async def test_client_close_codes_do_not_make_new_series(join, alice, caplog):
    caplog.set_level(logging.INFO)
    codes = (3001, 3002, 4123, 4999)
    for n, code in enumerate(codes):
        socket, _ = await join(alice, session_id=f"odd-{n}")
        await socket.close(code)
    labels = reason_labels()
    assert not [label for label in labels if label.startswith("code_")], labels
    assert "other" in labels
    records = disconnect_records(caplog)
    assert {r.code for r in records} >= set(codes)
    no_errors(caplog)


# --- the error frame's id -----------------------------------------------------------


async def test_too_long_names_the_message(join, alice):
    socket, _ = await join(alice)
    await socket.send(chat("long-1", "x" * (protocol.MAX_TEXT + 1)))
    error = await socket.recv()
    assert (error["code"], error["id"]) == ("too_long", "long-1")
    await socket.send({"type": "chat.message", "id": "", "text": "hi"})
    error = await socket.recv()
    assert error["code"] == "bad_frame" and "id" not in error
    await socket.send({"type": "ping", "ts": 1})
    assert await socket.recv() == {"type": "pong", "ts": 1}


async def test_rate_limited_names_the_message(join, alice, settings):
    settings.WS_RATE_LIMIT = 1  # a burst of two
    socket, _ = await join(alice)
    await socket.send({"type": "ping", "ts": 1})
    await socket.send({"type": "ping", "ts": 2})
    await socket.send(chat("over-1"))
    await socket.send({"type": "ping", "ts": 3})
    frames = await socket.recv_many(4)
    assert frames[2] == {
        "type": "error",
        "code": "rate_limited",
        "detail": frames[2]["detail"],
        "id": "over-1",
    }
    assert frames[3]["code"] == "rate_limited" and "id" not in frames[3]


async def test_db_unavailable_names_the_message(join, alice, monkeypatch):
    async def down(**kwargs):
        raise DatabaseUnavailable("down")

    socket, _ = await join(alice)
    monkeypatch.setattr(sockets, "message_post", down)
    await socket.send(chat("lost-1"))
    error = await socket.recv()
    assert (error["code"], error["id"]) == ("db_unavailable", "lost-1")
    assert await socket.closed_with() == 1013


# --- replay cost --------------------------------------------------------------------


async def test_resume_costs_one_token_per_hundred_messages(
    join, alice, stored, settings
):
    settings.WS_RATE_LIMIT = 1  # a burst of two tokens
    await stored("main", alice, 250)
    socket, hello = await join(alice, last_seq=250)
    assert hello["replay"] == 0
    # 250 messages cost three tokens: more than the bucket ever holds.
    await socket.send({"type": "resume", "last_seq": 0})
    error = await socket.recv()
    assert error["code"] == "rate_limited"
    await socket.silent()


async def test_resume_within_budget_replays(join, alice, stored, settings):
    settings.WS_RATE_LIMIT = 2  # a burst of four tokens
    await stored("main", alice, 250)
    socket, _ = await join(alice, last_seq=250)
    await socket.send({"type": "resume", "last_seq": 0})
    resumed = await socket.recv()
    assert (resumed["type"], resumed["replay"]) == ("resumed", 250)
    seqs = [(await socket.recv())["seq"] for _ in range(250)]
    assert seqs == list(range(1, 251))
    await socket.silent()


async def test_one_replay_in_flight(join, alice, stored, caplog):
    caplog.set_level(logging.INFO)
    await stored("main", alice, 50)
    socket, _ = await join(alice, last_seq=50)
    for _ in range(5):
        await socket.send({"type": "resume", "last_seq": 0})
    frames = []
    while True:
        frame = await socket.recv()
        frames.append(frame)
        answers = [f for f in frames if f["type"] in ("resumed", "error")]
        messages = [f for f in frames if f["type"] == "chat.message"]
        resumed = [f for f in answers if f["type"] == "resumed"]
        if len(answers) == 5 and len(messages) == 50 * len(resumed):
            break
    assert 1 <= len(resumed) <= 2, answers
    assert all(f["code"] == "rate_limited" for f in answers if f["type"] == "error")
    await socket.silent()
    await socket.send({"type": "ping", "ts": 9})
    assert await socket.recv() == {"type": "pong", "ts": 9}
    no_errors(caplog)


# --- per-user limits ----------------------------------------------------------------


async def test_sockets_per_user_over_the_maximum_close_4429(
    join, open_socket, token_for, alice, bob, settings, caplog
):
    caplog.set_level(logging.INFO)
    settings.WS_MAX_SOCKETS_PER_USER = 3
    held = [(await join(alice, session_id=f"tab-{n}"))[0] for n in range(3)]
    extra = await open_socket(
        "/ws/tab-9/?thread_id=main", subprotocols=["jwt", token_for(alice)]
    )
    assert await extra.closed_with() == 4429
    await extra.close()
    await join(bob, session_id="bob-1")  # another user is not affected
    await held[0].close()
    again, hello = await join(alice, session_id="tab-8")  # a freed place is reusable
    assert hello["type"] == "ws:session_established"
    await again.send({"type": "ping", "ts": 1})
    assert await again.recv() == {"type": "pong", "ts": 1}
    [record] = [r for r in disconnect_records(caplog) if r.session_id == "tab-9"]
    assert (record.code, record.reason, record.levelname) == (
        4429,
        "too_many",
        "WARNING",
    )
    no_errors(caplog)


async def test_sockets_of_a_dead_instance_lapse(join, alice, settings):
    from ops.redis_client import redis_client
    from realtime.limits import sockets_key

    settings.WS_MAX_SOCKETS_PER_USER = 2
    # Two sockets of an instance that was SIGKILLed: never closed, never refreshed.
    expired = time.time() - 1
    ghosts = {"gone-1": expired, "gone-2": expired}
    await redis_client().zadd(sockets_key("alice"), ghosts)
    socket, hello = await join(alice)
    assert hello["type"] == "ws:session_established"


async def test_frames_per_user_are_shared_by_their_sockets(join, alice, settings):
    settings.WS_RATE_LIMIT = 100
    settings.WS_USER_RATE_LIMIT = 0.5  # a burst of one frame for the user
    first, _ = await join(alice, session_id="tab-1")
    second, _ = await join(alice, session_id="tab-2")
    await first.send({"type": "ping", "ts": 1})
    assert await first.recv() == {"type": "pong", "ts": 1}
    await second.send(chat("m-1"))
    error = await second.recv()
    assert (error["code"], error["id"]) == ("rate_limited", "m-1")


# --- new threads per user, and the sidebar -------------------------------------------


def test_thread_creation_over_the_quota_is_429(alice, bob, token_for, settings):
    from django.test import Client

    settings.THREAD_CREATE_LIMIT = 2
    client = Client()
    auth = {"Authorization": f"Bearer {token_for(alice)}"}

    def create(thread_id: str, headers: dict):
        body = json.dumps({"id": thread_id})
        return client.post(
            "/api/threads", body, content_type="application/json", headers=headers
        )

    assert create("q-1", auth).status_code == 201
    assert create("q-1", auth).status_code == 409  # not created: not counted
    assert create("q-2", auth).status_code == 201
    refused = create("q-3", auth)
    assert refused.status_code == 429
    assert refused.reason_phrase == "Too Many Requests"
    assert 1 <= int(refused["Retry-After"]) <= 3600
    assert "error" in refused.json()
    # Another user's quota is their own.
    other = {"Authorization": f"Bearer {token_for(bob)}"}
    assert create("q-4", other).status_code == 201


async def test_thread_creation_on_connect_over_the_quota_closes_4429(
    join, open_socket, token_for, alice, settings
):
    settings.THREAD_CREATE_LIMIT = 1
    await join(alice, session_id="c-1", thread_id="fresh-1")
    refused = await open_socket(
        "/ws/c-2/?thread_id=fresh-2", subprotocols=["jwt", token_for(alice)]
    )
    assert await refused.closed_with() == 4429
    # Joining a thread that exists creates nothing: not refused.
    again, hello = await join(alice, session_id="c-3", thread_id="fresh-1")
    assert hello["thread_id"] == "fresh-1"
    assert not await db_read(lambda: Thread.objects.filter(pk="fresh-2").exists())


def test_own_threads_lead_the_sidebar(alice, bob):
    from chat.selectors import threads_for_user
    from chat.services import thread_create

    for n in range(5):  # public threads whose ids sort before everyone's
        thread_create(
            thread_id=f"aaa-{n}", private=False, member_usernames=[], creator=bob
        )
    thread_create(
        thread_id="zzz-own", private=False, member_usernames=[], creator=alice
    )
    thread_create(
        thread_id="zzz-private", private=True, member_usernames=["alice"], creator=bob
    )
    ids = [t.id for t in threads_for_user(user=alice, limit=3)]
    assert ids[:2] == ["zzz-own", "zzz-private"]
    assert ids[2] == "aaa-0"
