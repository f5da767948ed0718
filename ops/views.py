"""Health endpoints and this process's Prometheus figures (PROTOCOL.md §1)."""

import ipaddress

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ops.health import readiness
from ops.liveness import liveness_payload


async def liveness(request: HttpRequest) -> JsonResponse:
    """GET /health/liveness (under ASGI, ops.liveness answers it first)."""
    return JsonResponse(liveness_payload())


async def readiness_view(request: HttpRequest) -> JsonResponse:
    """GET /health/readiness: 200 when every dependency is up, else 503."""
    report = await readiness()
    response = JsonResponse(report, status=200 if report["overall"] == "up" else 503)
    if report["overall"] == "draining":
        # A planned answer, not a fault: Django's log_response skips a response
        # marked as logged (django/utils/log.py), which it would log at ERROR as a
        # 5xx. The access log (http_access) still records the 503.
        response._has_been_logged = True
    return response


async def api_health(request: HttpRequest) -> JsonResponse:
    """GET /api/health: a plain liveness answer for API clients."""
    return JsonResponse({"status": "ok", "message": "Emergence is running"})


def _metrics_client_allowed(request: HttpRequest) -> bool:
    networks = settings.METRICS_ALLOWED_NETWORKS
    if not networks:
        return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in network for network in networks)


def prometheus_metrics(request: HttpRequest) -> HttpResponse:
    """GET /metrics: this process's Prometheus figures (scraper networks only)."""
    if not _metrics_client_allowed(request):
        return JsonResponse({"error": "forbidden"}, status=403)
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
