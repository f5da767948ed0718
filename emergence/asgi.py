"""ASGI entry point: HTTP to Django; WebSocket via origin, admission, auth, DB."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emergence.settings")
# Django must be set up before anything imports models (channels docs, "Deploying").
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from accounts.middleware import (  # noqa: E402
    AllowedHostsOriginValidator,
    AuthMiddlewareStack,
)
from chat.routing import websocket_urlpatterns  # noqa: E402
from ops.admission import AdmissionControl  # noqa: E402
from ops.liveness import LivenessShortcut  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": LivenessShortcut(django_asgi_app),
        # Admission sits outside the auth lookup (the database) and the consumer
        # (Redis): a refused connect costs neither (PROTOCOL.md §2, "Overload").
        "websocket": AllowedHostsOriginValidator(
            AdmissionControl(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
        ),
    }
)
