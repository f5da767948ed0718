"""Concurrent writers on two Daphne processes: one gap-free, duplicate-free sequence."""

import asyncio

import pytest

from tests.conftest import assert_no_errors
from tests.e2e.wsclient import assert_in_order_once, stored_seqs, wait_log

pytestmark = pytest.mark.e2e

PER_INSTANCE = 200
THREAD = "busy"


async def test_two_instances_one_thread_400_messages(
    daphne, clients, alice, bob, carol, token_for
):
    # The rate limit is not under test here: lift it so each socket can burst 200.
    limits = {"WS_RATE_LIMIT": "100000", "WS_USER_RATE_LIMIT": "100000"}
    server_a = daphne("a", **limits)
    server_b = daphne("b", **limits)
    listen_a = await clients.open(
        server_a, "listen-a", token_for(carol), thread_id=THREAD
    )
    listen_b = await clients.open(
        server_b, "listen-b", token_for(carol), thread_id=THREAD
    )
    send_a = await clients.open(server_a, "send-a", token_for(alice), thread_id=THREAD)
    send_b = await clients.open(server_b, "send-b", token_for(bob), thread_id=THREAD)

    async def burst(sender, prefix: str) -> list[int]:
        ids = [f"{prefix}-{i}" for i in range(PER_INSTANCE)]
        for client_id in ids:  # all sent at once, acks awaited afterwards
            await sender.say(client_id, f"{prefix} says {client_id}")
        await sender.wait(
            lambda: len(sender.acks()) >= PER_INSTANCE,
            timeout=60,
            what=f"{PER_INSTANCE} acks",
        )
        acks = sender.acks()
        assert set(acks) == set(ids)
        assert not [a for a in acks.values() if a["duplicate"]]
        return [acks[client_id]["seq"] for client_id in ids]

    seqs_a, seqs_b = await asyncio.gather(burst(send_a, "a"), burst(send_b, "b"))
    total = 2 * PER_INSTANCE
    # Each sender's own messages got increasing seqs; together exactly 1..400.
    assert seqs_a == sorted(seqs_a) and seqs_b == sorted(seqs_b)
    assert sorted(seqs_a + seqs_b) == list(range(1, total + 1))
    # Both instances really interleaved (a serial run would give 1..200 to one).
    assert seqs_a[-1] > seqs_b[0] and seqs_b[-1] > seqs_a[0], (seqs_a, seqs_b)
    assert await stored_seqs(THREAD) == list(range(1, total + 1))

    for client in (listen_a, listen_b, send_a, send_b):
        await client.wait_seq(total, timeout=30)
        await asyncio.sleep(0.3)  # a duplicate arriving late would show here
        assert_in_order_once(client.seqs(), 1, total)
    by_seq = {f["seq"]: f["id"] for f in listen_a.of_type("chat.message")}
    assert [by_seq[s] for s in seqs_a] == [f"a-{i}" for i in range(PER_INSTANCE)]
    assert listen_a.of_type("chat.message") == listen_b.of_type("chat.message")

    for client in (listen_a, listen_b, send_a, send_b):
        await client.close()
    await wait_log(server_a, "ws_disconnect", count=2)
    await wait_log(server_b, "ws_disconnect", count=2)
    assert_no_errors(server_a)
    assert_no_errors(server_b)
