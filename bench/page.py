"""Static page load in a real Chromium: requests and bytes until the chat is live.

A fresh browser context (empty cache) opens the chat page of a logged-in user and
waits for the "Connected" state; every request and its transfer size is counted.
Then the page is reloaded in the same context to show what the far-future cache
saves. Runs Playwright's sync API in a worker thread of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import PASSWORD, USERNAME
from bench.servers import ROOT, Server, clean_environ

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def collect_static() -> Path:
    """collectstatic with the production storage (hashed, gzip) into a temp dir."""
    root = Path(tempfile.mkdtemp(prefix="emergence-bench-static-"))
    env = clean_environ()
    env.update(
        DJANGO_SETTINGS_MODULE="emergence.settings",
        DEBUG="0",
        SECRET_KEY="bench-collectstatic-0123456789abcdef0123456789abcdef",
        STATIC_ROOT=str(root),
    )
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
    )
    return root


def available() -> bool:
    return os.access(CHROMIUM, os.X_OK)


def _load(page, url: str) -> dict:
    requests: list = []
    sockets: list[str] = []
    page.on("requestfinished", lambda request: requests.append(request))
    page.on("websocket", lambda ws: sockets.append(ws.url))
    began = time.perf_counter()
    page.goto(url)
    page.wait_for_selector("#status[data-state=connected]", timeout=15_000)
    connected_ms = (time.perf_counter() - began) * 1000
    page.wait_for_load_state("networkidle")
    transferred = 0
    for request in requests:
        sizes = request.sizes()
        transferred += sizes["responseBodySize"] + sizes["responseHeadersSize"]
    return {
        "http_requests": len(requests),
        "websockets": len(sockets),
        "requests": len(requests) + len(sockets),
        "bytes": transferred,
        "connected_ms": round(connected_ms, 1),
    }


def page_load(server: Server) -> dict:
    """Cold and warm load of the chat page of a logged-in user."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        try:
            login = browser.new_context()
            page = login.new_page()
            page.goto(f"{server.http}/login/?next=/")
            page.get_by_label("Username").fill(USERNAME)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_label("Password").press("Enter")
            page.wait_for_url(f"{server.http}/")
            state = login.storage_state()
            login.close()
            context = browser.new_context(storage_state=state)
            page = context.new_page()
            cold = _load(page, f"{server.http}/")
            page = context.new_page()
            warm = _load(page, f"{server.http}/")
            context.close()
        finally:
            browser.close()
    return {
        "cold_requests": cold["requests"],
        "cold_bytes": cold["bytes"],
        "cold_connected_ms": cold["connected_ms"],
        "warm_requests": warm["requests"],
        "warm_bytes": warm["bytes"],
        "warm_connected_ms": warm["connected_ms"],
    }
