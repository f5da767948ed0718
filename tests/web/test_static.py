"""Static files as a real Daphne serves them: hashed names, gzip, far-future cache."""

import gzip
import http.cookiejar
import re
import urllib.parse
import urllib.request

import pytest

from tests.servers import ROOT

pytestmark = pytest.mark.e2e

FAR_FUTURE = "max-age=315360000, public, immutable"


def opener() -> urllib.request.OpenerDirector:
    """A cookie-keeping HTTP client that never goes through a proxy."""
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({}),
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
    )


def log_in(client, server, username: str, password: str) -> str:
    """Log in through the form; return the chat page's HTML."""
    with client.open(f"{server.http}/login/?next=/", timeout=10) as response:
        form = response.read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    body = urllib.parse.urlencode(
        {
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": token,
            "next": "/",
        }
    ).encode()
    with client.open(f"{server.http}/login/", data=body, timeout=10) as response:
        assert response.url == f"{server.http}/"
        return response.read().decode()


def fetch(client, url: str, **headers: str):
    request = urllib.request.Request(url, headers=headers)
    response = client.open(request, timeout=10)
    with response:
        return response.status, response.headers, response.read()


def test_assets_are_hashed_compressed_and_cached_for_ever(
    daphne, alice, password
) -> None:
    # urllib's cookie jar keeps Secure cookies off plain http (Chromium sends them to
    # 127.0.0.1, a trustworthy origin, so the browser tests keep the defaults).
    server = daphne("a", SESSION_COOKIE_SECURE="0", CSRF_COOKIE_SECURE="0")
    client = opener()
    html = log_in(client, server, "alice", password)
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert len(assets) == 2, assets
    css = next(a for a in assets if a.endswith(".css"))
    js = next(a for a in assets if a.endswith(".js"))
    assert re.fullmatch(r"/static/chat/app\.[0-9a-f]{12}\.css", css)
    assert re.fullmatch(r"/static/chat/app\.[0-9a-f]{12}\.js", js)
    assert '<link rel="icon" href="data:,">' in html

    for path, source in ((js, "static/chat/app.js"), (css, "static/chat/app.css")):
        status, headers, body = fetch(
            client, f"{server.http}{path}", **{"Accept-Encoding": "gzip"}
        )
        assert status == 200
        assert headers["Content-Encoding"] == "gzip"
        assert headers["Cache-Control"] == FAR_FUTURE
        assert "Accept-Encoding" in headers.get("Vary", "")
        assert gzip.decompress(body) == (ROOT / source).read_bytes()
        # Without gzip: the same file, plain.
        status, headers, body = fetch(client, f"{server.http}{path}")
        assert "Content-Encoding" not in headers
        assert body == (ROOT / source).read_bytes()
        assert headers["Cache-Control"] == FAR_FUTURE

    # The unhashed name still answers, but is never cached for long.
    _, headers, _ = fetch(client, f"{server.http}/static/chat/app.js")
    assert "immutable" not in headers["Cache-Control"]
    # The page itself is never cached: it carries the newest messages.
    _, headers, _ = fetch(client, f"{server.http}/")
    assert "no-cache" in headers["Cache-Control"]
    assert "no-store" in headers["Cache-Control"]
