"""URL map."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from accounts.views import LoginView, admin_login
from chat import views as chat_views
from ops import views as health_views
from sessions_app import views as session_views

urlpatterns = [
    path("", chat_views.chat_page, name="chat"),
    # Before the admin's own URLs: its login page goes through the login throttle.
    path("admin/login/", admin_login, name="admin-login"),
    path("admin/", admin.site.urls),
    path("login/", LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/token", chat_views.token_create, name="api-token"),
    path("api/threads", chat_views.thread_create_view, name="api-threads"),
    path(
        "api/threads/<str:thread_id>/messages",
        chat_views.thread_messages,
        name="api-thread-messages",
    ),
    path("api/health", health_views.api_health, name="api-health"),
    path("health/liveness", health_views.liveness, name="liveness"),
    path("health/readiness", health_views.readiness_view, name="readiness"),
    path("metrics", health_views.prometheus_metrics, name="metrics"),
    path("ws-metrics", session_views.ws_metrics_view, name="ws-metrics"),
]
