"""Epochs over a real Daphne: a database that went back in time is never trusted."""

import asyncio

import pytest

from tests.commands import manage
from tests.conftest import assert_no_errors
from tests.e2e.wsclient import WsClient, hello_of, open_ws, sql, ws_url

pytestmark = pytest.mark.e2e


async def open_with_epoch(clients, server, session_id, token, **query) -> WsClient:
    """A socket whose URL carries `epoch` (clients.open does not send one)."""
    ws = await open_ws(ws_url(server, session_id, thread_id="main", **query), token)
    client = WsClient(ws, session_id)
    clients.opened.append(client)
    await client.wait_frame("ws:session_established")
    return client


async def test_rollback_and_restore_reset_clients(daphne, clients, alice, token_for):
    server = daphne("a")
    a = await clients.open(server, "sess-a", token_for(alice))
    for i in range(1, 7):
        await a.chat(f"a-{i}")
    await a.wait_seq(6)
    epoch = hello_of(a)["epoch"]

    # A replica that lost its last three commits is promoted; Daphne keeps running.
    await sql("DELETE FROM chat_message WHERE thread_id = 'main' AND seq > 3")
    await sql("UPDATE chat_thread SET last_seq = 3 WHERE id = 'main'")
    b = await open_with_epoch(
        clients, server, "sess-b", token_for(alice), last_seq=6, epoch=epoch
    )
    hello = hello_of(b)
    assert (hello["last_seq"], hello["replay"], hello["recovered"]) == (3, 0, False)
    assert (hello["reset"], hello["epoch"]) == (True, epoch)

    # The socket open through it learns of it on its resume.
    mark = len(a.frames)
    await a.send(type="resume", last_seq=6, epoch=epoch)
    resumed = await a.wait_frame("resumed", start=mark)
    assert (resumed["reset"], resumed["replay"]) == (True, 0)

    # Seq 4 is handed out again: both sockets get it, neither drops it as old.
    ack = await b.chat("b-1", "after the rollback")
    assert ack["seq"] == 4
    for client in (a, b):
        await client.wait(
            lambda c=client: any(
                f["seq"] == 4 and f["id"] == "b-1" for f in c.of_type("chat.message")
            ),
            what="the reused seq 4",
        )

    # A restore: the operator bumps the epoch; the old epoch is answered reset.
    done = await asyncio.to_thread(manage, "thread_epoch_bump", "--thread", "main")
    assert done.returncode == 0, done.stderr
    assert "changed the epoch of 1 thread(s)" in done.stdout
    c = await open_with_epoch(
        clients, server, "sess-c", token_for(alice), last_seq=4, epoch=epoch
    )
    hello = hello_of(c)
    assert (hello["reset"], hello["replay"], hello["last_seq"]) == (True, 0, 4)
    assert hello["epoch"] != epoch
    # With the new epoch, the same client is up to date.
    d = await open_with_epoch(
        clients, server, "sess-d", token_for(alice), last_seq=4, epoch=hello["epoch"]
    )
    assert (hello_of(d)["reset"], hello_of(d)["recovered"]) == (False, True)
    for client in (a, b, c, d):
        await client.close()
    assert_no_errors(server)
