"""The login pages, with the failed-login throttle (accounts/throttle.py)."""

from typing import Any

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from accounts import throttle

ENDPOINT = "login_page"
ADMIN_ENDPOINT = "admin_login"


def too_many_failures(throttled: throttle.Throttled) -> HttpResponse:
    """A lockout: 429 Too Many Requests, text/plain, with Retry-After."""
    return HttpResponse(
        f"Too many failed logins. Try again in {throttled.retry_after} seconds.\n",
        status=429,
        content_type="text/plain; charset=utf-8",
        headers={"Retry-After": str(throttled.retry_after)},
    )


class LoginView(auth_views.LoginView):
    """Django's LoginView; failures counted, lockouts answered 429 + Retry-After."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        throttled = throttle.login_throttle_check(
            username=request.POST.get("username", ""),
            address=throttle.client_address(request),
            endpoint=ENDPOINT,
        )
        if throttled is not None:
            return too_many_failures(throttled)
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


def admin_login(request: HttpRequest) -> HttpResponse:
    """/admin/login/: the admin's own login view behind the same throttle as /login/."""
    # AdminSite.login builds Django's LoginView on the spot, with the admin's
    # form, template and context; wrapping it keeps all of that as Django has it.
    # https://github.com/django/django/blob/5.2/django/contrib/admin/sites.py
    if request.method != "POST":
        return admin.site.login(request)
    username = request.POST.get("username", "")
    address = throttle.client_address(request)
    throttled = throttle.login_throttle_check(
        username=username, address=address, endpoint=ADMIN_ENDPOINT
    )
    if throttled is not None:
        return too_many_failures(throttled)
    response = admin.site.login(request)
    # A valid form logs in and redirects; an invalid one (wrong password, not
    # staff, a field missing) is the form again.
    if isinstance(response, HttpResponseRedirect) and request.user.is_authenticated:
        throttle.login_success_record(username=request.user.get_username())
    else:
        throttle.login_failure_record(
            username=username, address=address, endpoint=ADMIN_ENDPOINT
        )
    return response
