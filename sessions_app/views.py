"""GET /ws-metrics: the shared disconnect figures (PROTOCOL.md §1)."""

from asgiref.sync import sync_to_async
from django.http import HttpRequest, JsonResponse

from accounts.auth import api_user
from realtime import figures


async def ws_metrics_view(request: HttpRequest) -> JsonResponse:
    """GET /ws-metrics: shared disconnect figures, staff only."""
    user = await sync_to_async(api_user)(request)
    if user is None:
        return JsonResponse({"error": "authentication required"}, status=401)
    if not user.is_staff:
        return JsonResponse({"error": "staff only"}, status=403)
    figures_now = await figures.ws_metrics()
    return JsonResponse({"status": "ok", "metrics": figures_now})
