"""A load balancer's health check, in a process of its own: GET a URL every N ms.

Run apart from the load generator so that its own busy event loop never inflates the
latencies it reports. Prints one JSON object: `[[start_offset_s, latency_ms], ...]`
(latency null for a failed probe); with --wall-clock the first item is the probe's
start as Unix time instead, to line samples up with another process's events.
SIGTERM ends it early: it still prints what it measured.

    python -m bench.probe http://127.0.0.1:8000/health/liveness --seconds 8
"""

import argparse
import http.client
import json
import signal
import sys
import time
from urllib.parse import urlsplit

stopping = False


def _stop(signum: int, frame: object) -> None:
    """SIGTERM: finish the probe under way, then print."""
    global stopping
    stopping = True


def probe(
    url: str, seconds: float, interval: float, timeout: float, wall: bool = False
) -> list:
    """Probe until `seconds` have passed; one new connection per probe, like an LB."""
    parts = urlsplit(url)
    out = []
    start = time.perf_counter()
    # Unix time of perf_counter's zero, so that a sample's offset becomes a date.
    base = time.time() - start if wall else -start
    next_at = start
    while (now := time.perf_counter()) - start < seconds and not stopping:
        if now < next_at:
            time.sleep(next_at - now)
        began = time.perf_counter()
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        try:
            conn.request("GET", parts.path)
            response = conn.getresponse()
            response.read()
            ok = response.status == 200
        except OSError:
            ok = False
        finally:
            conn.close()
        done = time.perf_counter()
        out.append(
            [round(base + began, 4), round((done - began) * 1000, 2) if ok else None]
        )
        next_at = began + interval
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the URL to GET")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to probe")
    parser.add_argument(
        "--interval-ms", type=float, default=10.0, help="ms between probe starts"
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="a probe slower than this failed"
    )
    parser.add_argument(
        "--wall-clock", action="store_true", help="sample times as Unix time"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _stop)
    seconds = min(args.seconds, 120.0)
    samples = probe(
        args.url, seconds, args.interval_ms / 1000, args.timeout, args.wall_clock
    )
    json.dump(samples, sys.stdout)


if __name__ == "__main__":
    main()
