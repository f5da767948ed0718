"""A first end-to-end check: a real Daphne answers a JWT socket."""

import json

import pytest
import websockets

from tests.conftest import assert_no_errors

pytestmark = pytest.mark.e2e


async def test_connect_and_chat(daphne, alice, token_for):
    server = daphne("a")
    async with websockets.connect(
        f"{server.ws}/ws/s1/?thread_id=main", subprotocols=["jwt", token_for(alice)]
    ) as ws:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "ws:session_established"
        await ws.send(json.dumps({"type": "chat.message", "id": "x", "text": "hi"}))
        assert json.loads(await ws.recv())["type"] == "presence"
        frames = [json.loads(await ws.recv()) for _ in range(2)]
        assert {f["type"] for f in frames} == {"ack", "chat.message"}
    assert_no_errors(server)
