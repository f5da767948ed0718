"""HTTP middleware: the database retried before a view runs, 503 when it stays down."""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import JsonResponse

from ops.db import DatabaseUnavailable, db_call, db_ping


class DatabaseHealthMiddleware:
    """HTTP twin: retry the DB before a view runs; answer 503 when it stays down.

    Skips paths that must not touch the DB (liveness, readiness, static files).
    """

    sync_capable = False
    async_capable = True
    skip_prefixes = ("/health/", "/static/", "/api/health", "/metrics")

    def __init__(self, get_response):
        if not iscoroutinefunction(get_response):
            raise TypeError("DatabaseHealthMiddleware needs an async request stack")
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request):
        if not request.path.startswith(self.skip_prefixes):
            try:
                await db_call(db_ping, op="http_request_ping")
            except DatabaseUnavailable:
                return JsonResponse(
                    {"error": "db_unavailable", "detail": "database unavailable"},
                    status=503,
                    headers={"Retry-After": "5"},
                )
        return await self.get_response(request)
