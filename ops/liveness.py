"""Liveness answered before Django: no middleware, no thread hop, no DB, no Redis.

Django's ASGI handler runs request signals and sync middleware through thread hops;
during a disconnect storm those queue behind the cleanup work and liveness took
hundreds of ms (measured in tests/e2e/test_cluster.py). A load balancer must not
kill a busy but healthy instance, so this path is answered straight on the loop.
"""

import json
import time

from django.conf import settings

PATH = "/health/liveness"
STARTED_AT = time.time()


def liveness_payload() -> dict:
    """What /health/liveness answers."""
    return {
        "status": "alive",
        "instance": settings.INSTANCE_ID,
        "uptime_s": round(time.time() - STARTED_AT, 1),
    }


class LivenessShortcut:
    """ASGI wrapper: GET/HEAD /health/liveness here, everything else to `app`."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if (
            scope["type"] != "http"
            or scope["path"].rstrip("/") != PATH
            or scope["method"] not in ("GET", "HEAD")
        ):
            return await self.app(scope, receive, send)
        body = json.dumps(liveness_payload()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send(
            {
                "type": "http.response.body",
                "body": body if scope["method"] == "GET" else b"",
            }
        )
