"""ASGI entry point: HTTP to Django, WebSocket through origin check, auth and DB health."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emergence.settings")
# Django must be set up before anything imports models (channels docs, "Deploying").
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from chat.routing import websocket_urlpatterns  # noqa: E402
from emergence.daphne_close_codes import allow_registered_close_codes  # noqa: E402
from sessions_app.middleware import (  # noqa: E402
    AllowedHostsOriginValidator,
    AuthMiddlewareStack,
)

# Daphne refuses close codes 1001-2999 (1008, 1009, 1011-1013 are in our table).
allow_registered_close_codes()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
