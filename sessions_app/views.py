"""Health endpoints (PROTOCOL.md §1)."""

import time

from django.conf import settings
from django.http import HttpRequest, JsonResponse

from sessions_app.health import readiness

STARTED_AT = time.time()


async def liveness(request: HttpRequest) -> JsonResponse:
    """GET /health/liveness: the process answers; touches neither DB nor Redis."""
    return JsonResponse(
        {
            "status": "alive",
            "instance": settings.INSTANCE_ID,
            "uptime_s": round(time.time() - STARTED_AT, 1),
        }
    )


async def readiness_view(request: HttpRequest) -> JsonResponse:
    """GET /health/readiness: 200 when every dependency is up, else 503."""
    report = await readiness()
    return JsonResponse(report, status=200 if report["overall"] == "up" else 503)


async def api_health(request: HttpRequest) -> JsonResponse:
    """GET /api/health: a plain liveness answer for API clients."""
    return JsonResponse({"status": "ok", "message": "Emergence is running"})
