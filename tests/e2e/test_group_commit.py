"""Group commit on two Daphne processes: bursts and racing resends, one sequence."""

import asyncio

import pytest

from tests.conftest import assert_no_errors
from tests.e2e.wsclient import assert_in_order_once, sql, stored_seqs, wait_log

pytestmark = pytest.mark.e2e

THREAD = "burst"
PER_SOCKET = 40  # ids of a socket's own, and as many shared with the user's other


async def stored_by_id(thread_id: str) -> dict[tuple[str, str], int]:
    """(username, client id) -> seq of every stored message of the thread."""
    rows = await sql(
        "SELECT u.username, m.client_id, m.seq FROM chat_message m "
        "JOIN auth_user u ON u.id = m.user_id WHERE m.thread_id = %s",
        thread_id,
    )
    return {(user, client_id): seq for user, client_id, seq in rows}


async def test_bursts_and_racing_resends_on_two_instances(
    daphne, clients, alice, bob, carol, token_for
):
    # The rate limit is not under test: lift it so each socket can burst.
    limits = {"WS_RATE_LIMIT": "100000", "WS_USER_RATE_LIMIT": "100000"}
    server_a = daphne("a", **limits)
    server_b = daphne("b", **limits)
    listeners = [
        await clients.open(server, f"listen-{name}", token_for(carol), thread_id=THREAD)
        for name, server in (("a", server_a), ("b", server_b))
    ]
    # Each sender has a socket on each instance (two devices of one user).
    senders = {
        (user.username, name): await clients.open(
            server, f"{user.username}-{name}", token_for(user), thread_id=THREAD
        )
        for user in (alice, bob)
        for name, server in (("a", server_a), ("b", server_b))
    }

    def ids_of(user: str, name: str) -> list[str]:
        own = [f"{user}-{name}-{k}" for k in range(PER_SOCKET)]
        # The same ids from both devices: a resend racing on the other instance.
        shared = [f"{user}-shared-{k}" for k in range(PER_SOCKET)]
        return [i for pair in zip(own, shared, strict=True) for i in pair]

    async def burst(user: str, name: str) -> None:
        sender, ids = senders[(user, name)], ids_of(user, name)
        for client_id in ids:  # all sent at once, acks awaited afterwards
            await sender.say(client_id, f"{user} says {client_id}")
        await sender.wait(
            lambda: len(sender.acks()) >= len(ids), timeout=60, what="every ack"
        )
        assert set(sender.acks()) == set(ids)

    await asyncio.gather(*(burst(user, name) for user, name in senders))
    total = 2 * 3 * PER_SOCKET  # per user: two sockets' own ids, one shared set
    assert await stored_seqs(THREAD) == list(range(1, total + 1))
    stored = await stored_by_id(THREAD)
    assert len(stored) == total

    for (user, name), sender in senders.items():
        acks = sender.acks()
        for client_id, ack in acks.items():
            assert ack["seq"] == stored[(user, client_id)], ack
        own = [acks[i]["seq"] for i in ids_of(user, name) if "-shared-" not in i]
        assert own == sorted(own)
        assert not any(acks[i]["duplicate"] for i in acks if "-shared-" not in i)
    for user in ("alice", "bob"):
        for k in range(PER_SOCKET):
            client_id = f"{user}-shared-{k}"
            pair = [senders[(user, name)].acks()[client_id] for name in "ab"]
            # Stored once, by whichever instance came first; the other is told so.
            assert sorted(a["duplicate"] for a in pair) == [False, True], pair

    every = [*listeners, *senders.values()]
    for client in every:
        await client.wait_seq(total, timeout=30)
    await asyncio.sleep(0.3)  # a duplicate arriving late would show here
    for client in every:
        assert_in_order_once(client.seqs(), 1, total)
    assert listeners[0].of_type("chat.message") == listeners[1].of_type("chat.message")
    by_seq = {
        f["seq"]: (f["user"], f["id"]) for f in listeners[0].of_type("chat.message")
    }
    assert {key: seq for seq, key in by_seq.items()} == stored

    for client in every:
        await client.close()
    for server in (server_a, server_b):
        await wait_log(server, "ws_disconnect", count=3)
        assert_no_errors(server)
