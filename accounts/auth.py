"""HTTP authentication for the JSON API: session cookie (with CSRF) or JWT bearer."""

from typing import Any

from django.contrib.auth import get_user_model
from django.http import HttpRequest
from django.middleware.csrf import CsrfViewMiddleware

from accounts import tokens


def _csrf_ok(request: HttpRequest) -> bool:
    """Django's own CSRF check, as DRF applies it to session-authenticated API calls."""
    check = CsrfViewMiddleware(lambda req: None)
    check.process_request(request)
    return check.process_view(request, None, (), {}) is None


def api_user(request: HttpRequest) -> Any | None:
    """The caller: a JWT bearer's user, the session's (CSRF-checked), or None."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        user_id = tokens.token_user_id(header[len("Bearer ") :].strip())
        if user_id is None:
            return None
        return (
            get_user_model()._default_manager.filter(pk=user_id, is_active=True).first()
        )
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    if request.method not in ("GET", "HEAD", "OPTIONS") and not _csrf_ok(request):
        return None
    return user
