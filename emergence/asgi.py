"""ASGI entry point: HTTP to Django; WebSocket via origin check, auth, DB health."""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emergence.settings")
# Django must be set up before anything imports models (channels docs, "Deploying").
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from chat.routing import websocket_urlpatterns  # noqa: E402
from emergence import daphne_compat  # noqa: E402
from sessions_app.liveness import LivenessShortcut  # noqa: E402
from sessions_app.middleware import (  # noqa: E402
    AllowedHostsOriginValidator,
    AuthMiddlewareStack,
)

# Daphne refuses close codes 1001-2999 (1008, 1009, 1011-1013 are in our table),
# and its SIGTERM handler crashed before cancelling any app (no 1012 drain).
daphne_compat.apply()

# Everything loaded so far lives as long as the process: keep it out of the
# collector's full passes. A full collection of a Daphne holding 1,000 sockets paused
# the loop for 100-260 ms, about a third of it spent re-scanning these objects.
gc.freeze()

application = ProtocolTypeRouter(
    {
        "http": LivenessShortcut(django_asgi_app),
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
