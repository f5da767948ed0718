"""End to end: a crowd of connects on a small WS_MAX_CONNECTING (PROTOCOL.md §2,
"Overload").

A real Daphne with a cap of a few connects in progress; sixty sockets at once, each
retrying with no backoff but the `overloaded` frame's retry_after_ms. Every one gets
in, every refusal is the frame then 1013, liveness answers throughout, and the log
holds no ERROR and no record per refused socket.
"""

import asyncio
import json
import re
import time
from collections import Counter

import pytest
from websockets.exceptions import ConnectionClosed

from bench.chatload import ChatClient, ClientConfig, wait_all_ready
from bench.servers import urlopen
from ops.admission import RETRY_MAX_MS, RETRY_MIN_MS
from tests.conftest import assert_no_errors
from tests.e2e.wsclient import open_ws, wait_log, ws_url

pytestmark = pytest.mark.e2e

LIMIT = 3
CROWD = 60
USERS = 6  # under any per-user socket limit
BOUND_S = 90.0  # the whole crowd; generous for a shared, busy box
STEP_TIMEOUT = 15.0  # one handshake or one frame (Daphne's handshake timeout)


@pytest.fixture
def tokens(fast_password_hasher, make_user, token_for):
    return [token_for(make_user(f"crowd{i}")) for i in range(USERS)]


async def until_established(server, i: int, token: str, tally: Counter):
    """Connect until ws:session_established; check every refusal on the way."""
    url = ws_url(server, f"crowd-{i}", thread_id=f"crowd-t{i % 3}")
    deadline = time.monotonic() + BOUND_S
    while True:
        assert time.monotonic() < deadline, f"socket {i} never got in: {tally}"
        tally["attempts"] += 1
        ws = await open_ws(url, token, open_timeout=STEP_TIMEOUT)
        frame = json.loads(await asyncio.wait_for(ws.recv(), STEP_TIMEOUT))
        if frame["type"] == "ws:session_established":
            return ws
        assert frame["type"] == "error" and frame["code"] == "overloaded", frame
        assert ws.subprotocol == "jwt"  # a JWT client can read the refusal
        assert RETRY_MIN_MS <= frame["retry_after_ms"] <= RETRY_MAX_MS, frame
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
        assert ws.close_code == 1013
        tally["overloaded"] += 1
        await asyncio.sleep(frame["retry_after_ms"] / 1000)


async def probe_liveness(server, stop: asyncio.Event) -> list[float | None]:
    """GET /health/liveness every 100 ms until `stop`: latencies (None: failed)."""
    out: list[float | None] = []

    def get() -> float | None:
        began = time.monotonic()
        try:
            with urlopen(f"{server.http}/health/liveness", timeout=5) as response:
                response.read()
                return time.monotonic() - began if response.status == 200 else None
        except OSError:
            return None

    while not stop.is_set():
        out.append(await asyncio.to_thread(get))
        await asyncio.sleep(0.1)
    return out


def overloaded_metric(server) -> float:
    with urlopen(f"{server.http}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.search(
        r'^emergence_ws_connects_total\{outcome="overloaded"\} (\S+)$', text, re.M
    )
    return float(found.group(1)) if found else 0.0


async def test_a_crowd_retrying_without_backoff_all_get_in(daphne, tokens):
    server = daphne("a", WS_MAX_CONNECTING=str(LIMIT))
    tally: Counter = Counter()
    stop = asyncio.Event()
    probes = asyncio.create_task(probe_liveness(server, stop))
    try:
        sockets = await asyncio.gather(
            *(
                until_established(server, i, tokens[i % USERS], tally)
                for i in range(CROWD)
            )
        )
    finally:
        stop.set()
        samples = await probes

    assert len(sockets) == CROWD
    assert tally["overloaded"] > LIMIT, tally  # the cap was reached, and often
    assert samples and all(s is not None for s in samples), samples
    assert overloaded_metric(server) == tally["overloaded"]
    # Logged per episode, not per refused socket.
    assert 1 <= len(server.events("ws_overloaded")) <= 3
    assert not server.events("ws_disconnect")  # a refusal is not a session's close

    for ws in sockets:
        await ws.close()
    await wait_log(server, "ws_disconnect", count=CROWD, timeout=30)
    assert len(server.events("ws_disconnect")) == CROWD
    assert_no_errors(server)


async def test_the_bench_client_waits_retry_after_instead_of_its_backoff(
    daphne, tokens
):
    server = daphne("a", WS_MAX_CONNECTING="2")
    # A backoff this long would outlast the test: only retry_after_ms brings
    # a refused client back in time.
    config = ClientConfig(backoff_base=1000.0, backoff_cap=1000.0, failover=False)
    clients = [
        ChatClient(
            f"bc{i}", [server.ws], tokens[i % USERS], "crowd-b", config=config, seed=i
        ).start()
        for i in range(24)
    ]
    try:
        assert await wait_all_ready(clients, BOUND_S) == len(clients)
        refused = sum(c.stats.errors["overloaded"] for c in clients)
        assert refused > 0
        for client in clients:
            assert set(client.stats.close_codes) <= {1013}, client.stats.close_codes
            assert client.stats.close_codes[1013] == client.stats.errors["overloaded"]
    finally:
        await asyncio.gather(*(c.stop() for c in clients))
    await wait_log(server, "ws_disconnect", count=len(clients), timeout=30)
    assert_no_errors(server)
