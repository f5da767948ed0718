"""Logins that end while sockets are open, across real Daphne instances: a user
deactivated through Django, a browser session logged out on another instance."""

import contextlib
import secrets
import urllib.error
import urllib.parse
import urllib.request

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

from emergence.settings_base import channel_layer_settings
from tests.conftest import assert_no_errors
from tests.e2e.wsclient import wait_log

pytestmark = pytest.mark.filterwarnings("ignore:No directory at:UserWarning")

# PROTOCOL.md: "closed with 4401 within 5 s"; bounded generously here.
REVOKE_BOUND = 15


@contextlib.asynccontextmanager
async def layer_of(server):
    """This process's channel layer on the Daphnes' (test-private) Redis prefix."""
    prefix = server.env_overrides["CHANNEL_LAYER_PREFIX"]
    with override_settings(
        CHANNEL_LAYERS=channel_layer_settings(settings.REDIS_URL, prefix)
    ):
        channel_layers.backends = {}
        try:
            yield
        finally:
            layer = channel_layers.backends.get("default")
            if layer is not None:
                close = getattr(layer, "close_pools", None) or layer.flush
                await close()
            channel_layers.backends = {}


@database_sync_to_async
def deactivate(user_id: int) -> None:
    user = get_user_model().objects.get(pk=user_id)
    user.is_active = False
    user.save()


async def test_deactivated_user_is_closed_on_every_instance(
    daphne, clients, alice, bob, token_for
):
    a, b = daphne("a"), daphne("b")
    on_a = await clients.open(a, "sess-a", token_for(alice))
    on_b = await clients.open(b, "sess-b", token_for(alice))
    other = await clients.open(b, "sess-bob", token_for(bob))
    async with layer_of(a):
        await deactivate(alice.pk)  # in this process: neither instance saw it
    assert await on_a.wait_closed(REVOKE_BOUND) == 4401
    assert await on_b.wait_closed(REVOKE_BOUND) == 4401
    await other.send(type="ping", ts=7)
    await other.wait(lambda: other.of_type("pong"), what="a pong")
    await other.close()
    for server, session in ((a, "sess-a"), (b, "sess-b")):
        closes = await wait_log(server, "ws_disconnect", session_id=session)
        assert [(r["code"], r["reason"]) for r in closes] == [(4401, "unauthenticated")]
        assert_no_errors(server)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the logout's answer itself (its target needs static files)


def http_logout(server, session_cookie: str) -> int:
    """POST /logout/ on a real instance, as a browser does (CSRF cookie and token).

    Django accepts any well-formed secret when the cookie and the form agree (see
    tests/e2e/test_login_throttle.py).
    """
    secret = secrets.token_hex(16)
    request = urllib.request.Request(
        f"{server.http}/logout/",
        data=urllib.parse.urlencode({"csrfmiddlewaretoken": secret}).encode(),
        headers={
            "Cookie": f"{session_cookie}; {settings.CSRF_COOKIE_NAME}={secret}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
    try:
        with opener.open(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_logout_on_another_instance_closes_the_sessions_socket(
    daphne, clients, alice
):
    a, b = daphne("a"), daphne("b")
    browser = Client()
    await database_sync_to_async(browser.force_login)(alice)
    name = settings.SESSION_COOKIE_NAME
    cookie = f"{name}={browser.cookies[name].value}"
    socket = await clients.open(
        a, "sess-browser", None, additional_headers={"Cookie": cookie}
    )
    status = await database_sync_to_async(http_logout)(b, cookie)
    assert status == 302  # to LOGOUT_REDIRECT_URL: logged out
    assert await socket.wait_closed(REVOKE_BOUND) == 4401
    closes = await wait_log(a, "ws_disconnect", session_id="sess-browser")
    assert [r["code"] for r in closes] == [4401]
    assert_no_errors(a)
    assert_no_errors(b)
