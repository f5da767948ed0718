"""A thread with a thousand sockets and a steady stream must not take the server down.

(Reported for the bare core layer at 2,000 sockets: redis TimeoutError, 1011 for
everyone. `make bench` measures fan-out to 1,000 sockets.)
"""

import asyncio

import pytest

from tests.conftest import assert_no_errors
from tests.e2e.wsclient import WsClient, assert_in_order_once, open_ws, ws_url

pytestmark = pytest.mark.e2e

SOCKETS = 1000
MESSAGES = 15


async def test_thousand_sockets_steady_stream(daphne, alice, bob, token_for):
    # One account holds every socket here: the per-user socket limit is lifted.
    # Fan-out is measured here, not admission: 50 joins at once stay admitted.
    server = daphne(
        "a",
        WS_RATE_LIMIT="1000",
        WS_MAX_SOCKETS_PER_USER="2000",
        WS_MAX_CONNECTING="1000",
    )
    token = token_for(alice)

    async def join(i: int) -> WsClient:
        ws = await open_ws(ws_url(server, f"big-{i}", thread_id="big"), token)
        client = WsClient(ws, f"big-{i}")
        await client.wait_frame("presence", timeout=60)
        return client

    receivers: list[WsClient] = []
    try:
        for start in range(0, SOCKETS, 50):
            receivers += await asyncio.gather(
                *(join(i) for i in range(start, start + 50))
            )
        sender = await join(SOCKETS)
        receivers.append(sender)
        for n in range(MESSAGES):
            await sender.say(f"s{n}")
            await asyncio.sleep(0.2)
        for client in receivers:
            await client.wait_seq(MESSAGES, timeout=60)
        for client in receivers:
            assert not client.closed, (client.name, client.close_code)
            assert_in_order_once(client.seqs(), 1, MESSAGES)
    finally:
        await asyncio.gather(
            *(c.close() for c in receivers if not c.closed), return_exceptions=True
        )
    assert_no_errors(server)
