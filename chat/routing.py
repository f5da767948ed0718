"""WebSocket URL map."""

from django.urls import re_path

from chat.consumers import ChatConsumer

websocket_urlpatterns = [
    # Lenient on purpose: the consumer validates the session id and answers a bad one
    # with close 4400; an unmatched route would be an ERROR traceback in URLRouter.
    re_path(r"^ws/(?P<session_id>[^/]*)/?$", ChatConsumer.as_asgi()),
    re_path(r"", ChatConsumer.as_asgi(), kwargs={"session_id": ""}),
]
