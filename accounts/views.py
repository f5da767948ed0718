"""The login page, with the failed-login throttle (accounts/throttle.py)."""

from typing import Any

from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse

from accounts import throttle

ENDPOINT = "login_page"


class LoginView(auth_views.LoginView):
    """Django's LoginView; failures counted, lockouts answered 429 + Retry-After."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        throttled = throttle.login_throttle_check(
            username=request.POST.get("username", ""),
            address=throttle.client_address(request),
            endpoint=ENDPOINT,
        )
        if throttled is not None:
            return HttpResponse(
                "Too many failed logins. Try again in "
                f"{throttled.retry_after} seconds.\n",
                status=429,
                content_type="text/plain; charset=utf-8",
                headers={"Retry-After": str(throttled.retry_after)},
            )
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form: Any) -> HttpResponse:
        throttle.login_failure_record(
            username=form.data.get("username", ""),
            address=throttle.client_address(self.request),
            endpoint=ENDPOINT,
        )
        return super().form_invalid(form)

    def form_valid(self, form: Any) -> HttpResponse:
        throttle.login_success_record(username=form.get_user().get_username())
        return super().form_valid(form)
