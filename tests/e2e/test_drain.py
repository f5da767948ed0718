"""Graceful shutdown on a real Daphne: SIGTERM drains the sockets with 1012.

PROTOCOL.md §2 "Graceful shutdown": readiness 503 "draining" at once, new
handshakes refused with HTTP 503, every socket already handed to the application
closed with 1012 (one still connecting, or waiting in line for a slot, too), in
batches spread over WS_DRAIN_SECONDS, then the process exits.
"""

import asyncio
import json
import signal
import time
import urllib.error
from collections import Counter
from typing import Any

import psycopg
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from bench.servers import urlopen
from tests.conftest import assert_no_errors
from tests.e2e.wsclient import WsClient, append_figure, open_ws, ws_url
from tests.servers import test_database_url as database_url

pytestmark = pytest.mark.e2e

EXIT_BOUND_S = 20.0
RACE_ROUNDS = 20
RACERS = 3
DRAIN_SOCKETS = 250
DRAIN_WINDOW_S = 3.0
DRAIN_USERS = 25  # ten sockets each: under any per-user socket limit


async def connect(server: Any, session_id: str, token: str) -> WsClient:
    url = ws_url(server, session_id, thread_id="main")
    return WsClient(await open_ws(url, token), session_id)


async def wait_exit(server: Any, timeout: float = EXIT_BOUND_S) -> int:
    """The exit code of the server process, which must end within `timeout`."""
    deadline = time.monotonic() + timeout
    while server.proc.poll() is None:
        assert time.monotonic() < deadline, f"still running: {server.tail()}"
        await asyncio.sleep(0.05)
    return server.proc.returncode


async def racer(server: Any, url: str, token: str, go: asyncio.Event, phase: str):
    """One socket: "refused" (HTTP 503) or its close code; sets `go` at `phase`."""
    try:
        client = WsClient(await open_ws(url, token), url)
    except InvalidStatus as exc:
        assert exc.response.status_code == 503, exc
        return "refused"
    if phase == "accepted":
        go.set()
    else:
        await client.wait_frame("ws:session_established", timeout=15)
        go.set()
    return await client.wait_closed(timeout=EXIT_BOUND_S)


async def race_round(server: Any, token: str, round_no: int) -> list[Any]:
    """A warm socket, then racers SIGTERMed the moment the first is in `phase`."""
    warm = await connect(server, f"w{round_no}", token)
    await warm.wait_frame("presence")
    go = asyncio.Event()
    phase = ("accepted", "established")[round_no % 2]
    urls = [ws_url(server, f"r{round_no}x{i}", thread_id="main") for i in range(RACERS)]
    racers = [asyncio.create_task(racer(server, u, token, go, phase)) for u in urls]
    await asyncio.wait_for(go.wait(), 15)
    server.proc.send_signal(signal.SIGTERM)
    codes = [await warm.wait_closed(timeout=EXIT_BOUND_S)]
    codes += await asyncio.gather(*racers)
    assert await wait_exit(server) == 0, server.tail()
    return codes


async def test_sigterm_while_sockets_connect_closes_each_with_1012(
    daphne, alice, token_for
):
    token = token_for(alice)
    outcomes: Counter = Counter()
    for round_no in range(RACE_ROUNDS):
        server = daphne(f"race{round_no}", WS_DRAIN_SECONDS="1")
        codes = await race_round(server, token, round_no)
        # The warm socket and the racer that pulled the trigger were handed over.
        assert codes[0] == 1012 and 1012 in codes[1:], (round_no, codes)
        assert set(codes) <= {1012, "refused"}, (round_no, codes)
        outcomes.update(codes)
        assert_no_errors(server)
    assert outcomes[1012] >= 2 * RACE_ROUNDS


async def open_many(server: Any, tokens: list[str], count: int) -> list[WsClient]:
    """`count` established sockets, opened a few at a time (under WS_MAX_CONNECTING)."""
    clients: list[WsClient] = []

    async def one(i: int) -> WsClient:
        client = await connect(server, f"d{i}", tokens[i % len(tokens)])
        await client.wait_frame("presence", timeout=30)
        return client

    for start in range(0, count, 16):
        stop = min(count, start + 16)
        clients += await asyncio.gather(*(one(i) for i in range(start, stop)))
    return clients


async def closed_at(client: WsClient) -> tuple[float, int | None]:
    code = await client.wait_closed(timeout=DRAIN_WINDOW_S + EXIT_BOUND_S)
    return time.monotonic(), code


def readiness_during_drain(server: Any) -> tuple[int, dict[str, Any]]:
    try:
        with urlopen(f"{server.http}/health/readiness", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def spread(times: list[float], window: float) -> tuple[float, float]:
    """(first-to-last / window, largest share of closes in one tenth of the window)."""
    first = min(times)
    slices = Counter(min(9, int((t - first) / (window / 10))) for t in times)
    return (max(times) - first) / window, max(slices.values()) / len(times)


@pytest.fixture
def tokens(make_user, token_for) -> list[str]:
    """Tokens of DRAIN_USERS users."""
    return [token_for(make_user(f"drain{i}")) for i in range(DRAIN_USERS)]


async def test_drain_closes_every_socket_with_1012_spread_over_the_window(
    daphne, tokens
):
    token = tokens[0]
    server = daphne("drain", WS_DRAIN_SECONDS=str(DRAIN_WINDOW_S))
    clients = await open_many(server, tokens, DRAIN_SOCKETS)
    waits = [asyncio.create_task(closed_at(c)) for c in clients]
    sigterm_at = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.3)
    status, report = await asyncio.to_thread(readiness_during_drain, server)
    assert (status, report["overall"]) == (503, "draining"), report
    with pytest.raises(InvalidStatus) as refused:
        await open_ws(ws_url(server, "late", thread_id="main"), token)
    assert refused.value.response.status_code == 503
    results = await asyncio.gather(*waits)
    assert [code for _, code in results] == [1012] * DRAIN_SOCKETS
    assert await wait_exit(server) == 0, server.tail()
    covered, busiest = spread([t for t, _ in results], DRAIN_WINDOW_S)
    first = min(t for t, _ in results) - sigterm_at
    append_figure(
        f"drain {DRAIN_SOCKETS} sockets over {DRAIN_WINDOW_S:.0f} s: first 1012 "
        f"after {first:.2f} s, first-to-last {covered:.0%} of the window, "
        f"busiest tenth {busiest:.0%} of the closes"
    )
    assert covered >= 0.5 and busiest <= 0.4, (covered, busiest)
    [started] = server.events("drain_started")
    [finished] = server.events("drain_finished")
    assert started["sockets"] == DRAIN_SOCKETS, started
    assert finished["closed"] == DRAIN_SOCKETS, finished
    assert_no_errors(server)


IN_LINE = 10


async def waiting(server: Any, session_id: str, token: str) -> tuple[Any, list]:
    """One connect: its close code (or how it failed) and the frames it read."""
    url = ws_url(server, session_id, thread_id="main")
    try:
        client = WsClient(await open_ws(url, token, open_timeout=EXIT_BOUND_S), url)
    except InvalidStatus as exc:
        return exc.response.status_code, []  # 503: the drain had begun
    except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
        return type(exc).__name__, []  # dropped unanswered
    return await client.wait_closed(timeout=EXIT_BOUND_S), client.frames


async def test_sigterm_tells_the_connects_waiting_in_line_1012(
    daphne, alice, token_for
):
    server = daphne(
        "line",
        WS_MAX_CONNECTING="1",
        WS_ADMISSION_WAIT_MS="15000",
        WS_DRAIN_SECONDS="1",
    )
    token = token_for(alice)
    first = await connect(server, "held", token)  # the session row exists
    await first.wait_frame("presence")
    await first.ws.close()
    # Another transaction holds the row: the next connect of "held" stays in
    # progress, in its database round, and keeps the only slot.
    lock = await psycopg.AsyncConnection.connect(database_url("line-lock"))
    try:
        await lock.execute(
            "SELECT 1 FROM sessions_app_chatsession WHERE id = 'held' FOR UPDATE"
        )
        held = asyncio.create_task(waiting(server, "held", token))
        await asyncio.sleep(1.0)
        line = [
            asyncio.create_task(waiting(server, f"line{i}", token))
            for i in range(IN_LINE)
        ]
        await asyncio.sleep(1.0)  # all in line behind it, handshakes unanswered
        server.proc.send_signal(signal.SIGTERM)
        outcomes = await asyncio.wait_for(asyncio.gather(*line), EXIT_BOUND_S)
    finally:
        await lock.rollback()
        await lock.close()
    assert outcomes == [(1012, [])] * IN_LINE  # told at once, never admitted
    assert (await held)[0] == 1012
    assert await wait_exit(server) == 0, server.tail()
    assert_no_errors(server)
