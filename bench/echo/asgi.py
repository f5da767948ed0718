"""Bare Channels echo app: one group per thread, every text relayed as-is."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.echo.settings")
# Channels reads settings (CHANNEL_LAYERS) on first use: set Django up first.
django.setup(set_prefix=False)

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

LIVENESS_BODY = b'{"status":"alive"}'


class EchoConsumer(AsyncWebsocketConsumer):
    """Relays every text frame to every socket of its thread (sender included)."""

    async def connect(self):
        self.group = f"echo.{self.scope['url_route']['kwargs']['thread']}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        await self.channel_layer.group_send(
            self.group, {"type": "echo.message", "text": text_data}
        )

    async def echo_message(self, event):
        await self.send(text_data=event["text"])


async def alive(scope, receive, send):
    """Answer 200 {"status":"alive"} to any HTTP request (the readiness probe)."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(LIVENESS_BODY)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": LIVENESS_BODY})


application = ProtocolTypeRouter(
    {
        "http": alive,
        "websocket": URLRouter([path("ws/echo/<str:thread>/", EchoConsumer.as_asgi())]),
    }
)
