"""Fan-out benchmark: one message to N sockets of one thread, per channel layer.

Starts its own Daphne processes (loopback only) on PostgreSQL + Redis, opens N
sockets in one thread spread over the instances, sends ROUNDS messages one at a
time and measures the time until the last socket has each one. Bounded in count
and time; writes bench/results/fanout.json and prints a table.

    .venv/bin/python bench/fanout.py --sockets 1000 --instances 1 --rounds 5
"""

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg
import websockets

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DB_NAME = "emergence_bench"
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
PASSWORD = "bench-password-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_env(layer: str, prefix: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"{PG}/{DB_NAME}",
        REDIS_URL=REDIS,
        CHANNEL_LAYER=layer,
        CHANNEL_LAYER_PREFIX=prefix,
        SHARED_KEY_PREFIX=prefix,
        CACHE_KEY_PREFIX=prefix,
        SECRET_KEY="bench-secret-key-0123456789abcdef0123456789",
        DEBUG="0",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        LOG_LEVEL="WARNING",
        WS_RATE_LIMIT="1000",
    )
    return env


def prepare_database() -> None:
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)
        ).fetchone()
        if not exists:
            conn.execute(f"CREATE DATABASE {DB_NAME}")
    env = base_env("core", "emergence-bench")
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run(
        [*manage, "demo_user", "--username", "bench", "--password", PASSWORD],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )


def start_daphne(env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "emergence.asgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            url = f"http://127.0.0.1:{port}/health/liveness"
            urllib.request.urlopen(url, timeout=1)
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("daphne did not start")


def token(port: int) -> str:
    body = json.dumps({"username": "bench", "password": PASSWORD}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/token", data=body, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["token"]


async def open_socket(port: int, session_id: str, tok: str, thread: str):
    url = f"ws://127.0.0.1:{port}/ws/{session_id}/?thread_id={thread}"
    ws = await websockets.connect(
        url,
        subprotocols=["jwt", tok],
        proxy=None,
        open_timeout=30,
        ping_interval=None,
        max_queue=None,
    )
    while json.loads(await ws.recv())["type"] != "presence":
        pass
    return ws


async def run_layer(
    layer: str, sockets: int, instances: int, rounds: int, interval: float = 0.5
) -> dict:
    prefix = f"emergence-bench-{layer}-{os.getpid()}"
    env = base_env(layer, prefix)
    procs = [start_daphne(env) for _ in range(instances)]
    thread = f"fan-{layer}-{int(time.time())}"
    try:
        tok = token(procs[0][1])
        receivers = []
        for start in range(0, sockets, 50):
            batch = [
                open_socket(procs[i % instances][1], f"{thread}-r{i}", tok, thread)
                for i in range(start, min(start + 50, sockets))
            ]
            receivers += await asyncio.gather(*batch)
        sender = await open_socket(procs[0][1], f"{thread}-sender", tok, thread)
        # Drain the join presence frames the receivers got while others connected.
        await asyncio.sleep(1.0)
        for ws in receivers:
            while True:
                try:
                    await asyncio.wait_for(ws.recv(), 0.001)
                except TimeoutError:
                    break
        last_receiver_ms, median_ms = [], []
        for round_no in range(rounds):
            sent = time.perf_counter()
            await sender.send(
                json.dumps({"type": "chat.message", "id": f"b{round_no}", "text": "x"})
            )

            async def arrival(ws, wanted=f"b{round_no}", sent=sent) -> float:
                while True:
                    frame = json.loads(await ws.recv())
                    if frame["type"] == "chat.message" and frame["id"] == wanted:
                        return (time.perf_counter() - sent) * 1000

            times = await asyncio.wait_for(
                asyncio.gather(*(arrival(ws) for ws in receivers)), 60
            )
            last_receiver_ms.append(max(times))
            median_ms.append(statistics.median(times))
            await asyncio.sleep(interval)
        # A big thread must never take the server down: count sockets it closed.
        dropped = sum(1 for ws in receivers if ws.close_code is not None)
        for ws in [*receivers, sender]:
            await ws.close()
        return {
            "sockets_closed_by_server": dropped,
            "layer": layer,
            "sockets": sockets,
            "instances": instances,
            "rounds": rounds,
            "last_receiver_ms": {
                "median": round(statistics.median(last_receiver_ms), 1),
                "min": round(min(last_receiver_ms), 1),
                "max": round(max(last_receiver_ms), 1),
            },
            "median_receiver_ms": round(statistics.median(median_ms), 1),
        }
    finally:
        for proc, _ in procs:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=1000, help="receivers (≤ 5000)")
    parser.add_argument("--instances", type=int, default=1, help="Daphne processes")
    parser.add_argument("--rounds", type=int, default=5, help="messages measured")
    parser.add_argument("--layers", default="core,pubsub", help="layers to compare")
    parser.add_argument(
        "--interval", type=float, default=0.5, help="seconds between messages"
    )
    args = parser.parse_args()
    sockets = min(args.sockets, 5000)
    prepare_database()
    results = []
    for layer in args.layers.split(","):
        result = asyncio.run(
            run_layer(layer, sockets, args.instances, args.rounds, args.interval)
        )
        results.append(result)
        print(json.dumps(result))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "fanout.json"
    runs = json.loads(out.read_text()) if out.exists() else []
    runs.append(
        {
            "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "machine": f"{platform.node()} {os.cpu_count()} cores",
            "python": platform.python_version(),
            "results": results,
        }
    )
    out.write_text(json.dumps(runs, indent=2) + "\n")


if __name__ == "__main__":
    main()
