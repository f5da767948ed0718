"""The web client in a real Chromium against real Daphne processes.

Alice and Bob log in through the login page, each in a browser context of their
own and on a Daphne of their own (shared PostgreSQL and Redis). Alice's Daphne is
stopped and replaced on the same port while she types: her message must reach
Bob exactly once. Also: the page's request budget, a reload with a queued message,
and a refusal (4403) that must stop the retries.
"""

import re
import time

import pytest
from playwright.sync_api import Page, expect

from chat.models import Message, Thread
from chat.services import message_create
from tests.conftest import assert_no_errors
from tests.e2e.wsclient import append_figure

pytestmark = pytest.mark.e2e

MAX_REQUESTS_AFTER_HTML = 4
# Worst case after a restart: the backoff had reached 8 s (the server is down ~2 s).
RECONNECT_TIMEOUT_MS = 35_000


def log_in(context, server, username: str, password: str, shot=None) -> Page:
    """Open / (redirected to the login page), log in with the keyboard, land on /."""
    page = context.new_page()
    page.goto(f"{server.http}/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))
    expect(page.get_by_label("Username")).to_be_focused()  # autofocus
    if shot:
        page.screenshot(path=str(shot))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_label("Password").press("Enter")
    page.wait_for_url(f"{server.http}/")
    return page


def status(page: Page):
    return page.locator("#status")


def wait_connected(page: Page, timeout: float = 15_000) -> None:
    expect(status(page)).to_have_attribute("data-state", "connected", timeout=timeout)
    expect(page.locator("#status-text")).to_have_text("Connected")


def texts(page: Page) -> list[str]:
    """The text of every delivered message on the page, in display order."""
    return page.locator("#messages .msg .text").all_inner_texts()


def seqs(page: Page) -> list[int]:
    return [
        int(s)
        for s in page.locator("#messages .msg").evaluate_all(
            "els => els.map(e => e.dataset.seq)"
        )
    ]


def send(page: Page, text: str) -> None:
    """Type into the message box and press Enter (keyboard only)."""
    box = page.get_by_label(re.compile(r"^Message to #"))
    box.fill(text)
    box.press("Enter")


def wait_until(page: Page, predicate, timeout_ms: float = 10_000) -> None:
    """Poll a condition on what Playwright events recorded. Never time.sleep here:
    the sync API dispatches events and route handlers only inside its own calls."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not predicate():
        assert time.monotonic() < deadline, f"condition not met in {timeout_ms} ms"
        page.wait_for_timeout(50)


def console_lines(page: Page) -> list[str]:
    lines: list[str] = []
    page.on("console", lambda message: lines.append(message.text))
    return lines


def test_chat_across_instances_survives_a_restart(
    daphne, contexts, alice, bob, password, artifacts
):
    a = daphne("a")
    b = daphne("b")

    # Alice logs in; her chat page is then opened in a fresh context (empty cache)
    # to count what it loads after the HTML.
    login_context = contexts.new()
    log_in(login_context, a, "alice", password, shot=artifacts / "login-page.png")
    state = login_context.storage_state()
    alice_context = contexts.new(storage_state=state)
    page_a = alice_context.new_page()
    alice_console = console_lines(page_a)
    requests: list[str] = []
    sockets: list[str] = []
    page_a.on("request", lambda request: requests.append(request.url))
    page_a.on("websocket", lambda ws: sockets.append(ws.url))
    page_a.goto(f"{a.http}/")
    wait_connected(page_a)
    page_a.wait_for_load_state("networkidle")
    after_html = [url for url in requests if url.rstrip("/") != a.http]
    assert requests[0].rstrip("/") == a.http, requests
    append_figure(
        f"chat page: {len(after_html)} HTTP request(s) after the HTML "
        f"({', '.join(u.rsplit('/', 1)[-1] for u in after_html)}) "
        f"+ {len(sockets)} WebSocket"
    )
    assert len(after_html) + len(sockets) <= MAX_REQUESTS_AFTER_HTML, (
        after_html,
        sockets,
    )
    assert not any("favicon" in url for url in requests)
    assert re.search(r"/static/chat/app\.[0-9a-f]{12}\.js$", after_html[-1] + "")
    expect(page_a.locator("#present")).to_contain_text("alice (you)")

    # Bob logs in on instance B.
    bob_context = contexts.new()
    page_b = log_in(bob_context, b, "bob", password)
    wait_connected(page_b)

    # Send and receive across the two instances.
    send(page_a, "hello bob")
    expect(page_b.locator("#messages")).to_contain_text("hello bob")
    expect(page_a.locator("#messages")).to_contain_text("hello bob")
    send(page_b, "hi alice, from instance b")
    expect(page_a.locator("#messages")).to_contain_text("from instance b")
    expect(page_a.locator("#pending .msg")).to_have_count(0)
    expect(page_a.locator("#messages .msg.mine")).to_have_count(1)
    if "bob" in (page_a.locator("#present").inner_text()):
        print("presence frames seen: alice sees bob present")
    page_a.screenshot(path=str(artifacts / "chat-page.png"))

    # Stop the Daphne serving Alice's page; she types while it is down.
    a.stop()
    expect(status(page_a)).to_have_attribute("data-state", re.compile("reconnecting"))
    expect(page_a.locator("#status-text")).to_have_text(
        re.compile(r"^Reconnecting( in \d+ s|…)$")
    )
    send(page_a, "sent while the server was down")
    pending = page_a.locator("#pending .msg")
    expect(pending).to_have_count(1)
    expect(pending).to_have_attribute("data-state", "queued")
    expect(pending).to_contain_text("waiting for the connection")
    stored = page_a.evaluate(
        "Object.keys(sessionStorage).filter(k => k.startsWith('emergence.outbox'))"
        ".map(k => sessionStorage.getItem(k))"
    )
    assert "sent while the server was down" in "".join(stored)
    page_a.screenshot(path=str(artifacts / "chat-page-reconnecting.png"))

    # A new Daphne on the same port: Alice reconnects and her message goes out once.
    a2 = daphne("a2", port=a.port)
    wait_connected(page_a, timeout=RECONNECT_TIMEOUT_MS)
    expect(page_a.locator("#pending .msg")).to_have_count(0)
    expect(page_b.locator("#messages")).to_contain_text(
        "sent while the server was down"
    )
    expect(page_a.locator("#messages")).to_contain_text(
        "sent while the server was down"
    )
    page_b.wait_for_timeout(500)  # a duplicate would arrive right behind
    for page in (page_a, page_b):
        assert texts(page).count("sent while the server was down") == 1, texts(page)
        assert texts(page) == [
            "hello bob",
            "hi alice, from instance b",
            "sent while the server was down",
        ]
        assert seqs(page) == [1, 2, 3]
    assert Message.objects.filter(text="sent while the server was down").count() == 1

    states = page_a.evaluate("window.emergenceChat.stateLog")
    assert states[:2] == ["connecting", "connected"], states
    assert "reconnecting" in states
    assert states[-1] == "connected"
    assert states.index("reconnecting") < len(states) - 1
    closes = [line for line in alice_console if line.startswith("websocket closed:")]
    assert closes, alice_console
    assert re.match(r"websocket closed: code=(1012|1006) reason=", closes[0]), closes
    append_figure(
        f"browser restart: alice's states {states}; close codes logged {closes}"
    )
    assert len(page_a.evaluate("window.emergenceChat.stateLog")) == len(states)
    for server in (a2, b):
        assert_no_errors(server)


def test_phone_width_and_keyboard_only(daphne, contexts, alice, password, artifacts):
    server = daphne("a")
    context = contexts.new(
        viewport={"width": 390, "height": 780}, device_scale_factor=1, has_touch=True
    )
    page = log_in(context, server, "alice", password)
    wait_connected(page)
    # Keyboard only: the skip link is the first stop and leads to the message box.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to the message box")).to_be_focused()
    page.keyboard.press("Enter")
    box = page.get_by_label(re.compile(r"^Message to #"))
    expect(box).to_be_focused()
    page.keyboard.type("typed on a phone")
    page.keyboard.press("Enter")
    expect(page.locator("#messages")).to_contain_text("typed on a phone")
    # The thread list is folded away on a narrow screen, and reachable.
    details = page.locator("#side-details")
    expect(details).not_to_have_attribute("open", "")
    page.locator("#side-details > summary").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_label("Open or start a thread")).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"horizontal scroll on a phone: {width}px"
    page.screenshot(path=str(artifacts / "chat-page-phone.png"))
    # Another thread through the picker, by keyboard.
    page.get_by_label("Open or start a thread").fill("random")
    page.get_by_label("Open or start a thread").press("Enter")
    page.wait_for_url(re.compile(r"\?thread=random$"))
    wait_connected(page)
    expect(page.get_by_role("heading", level=1)).to_contain_text("#random")
    # Log out is a POST form.
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(r"/login/$"))
    page.goto(f"{server.http}/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))


class SocketGate:
    """Routes the context's WebSockets: through to the server, or refused with 1013
    (try again later) while closed. Sockets let through can be dropped."""

    def __init__(self, context) -> None:
        self.open = True
        self.routes = []
        context.route_web_socket(re.compile(r"/ws/"), self.route)

    def route(self, ws) -> None:
        if self.open:
            ws.connect_to_server()
            self.routes.append(ws)
        else:
            ws.close(code=1013, reason="test: try again later")

    def shut(self) -> None:
        """Refuse new sockets and drop the ones let through (the page sees 1012)."""
        self.open = False
        for ws in self.routes:
            ws.close(code=1012, reason="test: dropped")
        self.routes.clear()


def test_queued_message_survives_a_reload(daphne, contexts, alice, password):
    server = daphne("a")
    context = contexts.new()
    gate = SocketGate(context)
    page = log_in(context, server, "alice", password)
    console = console_lines(page)  # kept across reloads
    wait_connected(page)
    gate.shut()
    expect(status(page)).to_have_attribute("data-state", "reconnecting")
    wait_until(
        page, lambda: "websocket closed: code=1012 reason=test: dropped" in console
    )
    send(page, "queued before a reload")
    expect(page.locator("#pending .msg")).to_have_count(1)

    page.reload()
    closes_before = sum("code=1013" in line for line in console)
    pending = page.locator("#pending .msg")
    expect(pending).to_have_count(1)
    expect(pending).to_contain_text("queued before a reload")
    expect(pending).to_have_attribute("data-state", "queued")
    expect(status(page)).to_have_attribute("data-state", "reconnecting")
    # The reloaded page keeps retrying (1013: try again later) and keeps its queue.
    wait_until(page, lambda: sum("code=1013" in x for x in console) > closes_before)
    expect(pending).to_have_count(1)

    # The network is back: 'online' retries at once instead of waiting.
    gate.open = True
    page.evaluate("window.dispatchEvent(new Event('online'))")
    wait_connected(page, timeout=5_000)
    expect(page.locator("#pending .msg")).to_have_count(0)
    expect(page.locator("#messages")).to_contain_text("queued before a reload")
    assert texts(page) == ["queued before a reload"]
    assert Message.objects.filter(text="queued before a reload").count() == 1
    assert_no_errors(server)


def test_too_many_missed_messages_come_over_http(
    daphne, contexts, alice, bob, password
):
    """More missed than WS_MAX_REPLAY: recovered=false, the page pages over HTTP."""
    server = daphne("a", WS_MAX_REPLAY="3")
    context = contexts.new()
    gate = SocketGate(context)
    page = log_in(context, server, "alice", password)
    wait_connected(page)
    send(page, "before the drop")
    expect(page.locator("#messages .msg")).to_have_count(1)
    history_requests: list[str] = []
    page.on(
        "request",
        lambda r: history_requests.append(r.url) if "/api/threads/" in r.url else None,
    )
    gate.shut()
    expect(status(page)).to_have_attribute("data-state", "reconnecting")
    for i in range(1, 8):
        message_create(
            thread_id="main", user=bob, client_id=f"b{i}", text=f"missed {i}"
        )
    gate.open = True
    page.evaluate("window.dispatchEvent(new Event('online'))")
    wait_connected(page, timeout=5_000)
    expect(page.locator("#messages .msg")).to_have_count(8)
    assert texts(page) == ["before the drop"] + [f"missed {i}" for i in range(1, 8)]
    assert seqs(page) == list(range(1, 9))
    assert [u.split("/api/", 1)[1] for u in history_requests] == [
        "threads/main/messages?after_seq=1&limit=500"
    ]
    assert_no_errors(server)


def test_forbidden_thread_shows_why_and_stops_retrying(
    daphne, contexts, alice, bob, password
):
    thread = Thread.objects.create(id="secret", private=True, created_by=bob)
    thread.members.add(bob)
    server = daphne("a")
    context = contexts.new()
    page = log_in(context, server, "alice", password)
    wait_connected(page)
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    console = console_lines(page)
    page.goto(f"{server.http}/?thread=secret")
    alert = page.get_by_role("alert")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("private and you are not a member")
    expect(status(page)).to_have_attribute("data-state", "stopped")
    expect(page.locator("#status-text")).to_have_text("Disconnected")
    page.wait_for_timeout(2000)  # a retry would come within 0.5 s
    assert len(sockets) == 1, sockets
    assert [line for line in console if line.startswith("websocket closed")] == [
        "websocket closed: code=4403 reason="
    ]
    forbidden = [r for r in server.events("ws_disconnect") if r.get("code") == 4403]
    assert len(forbidden) == 1, forbidden
    assert page.locator("#messages .msg").count() == 0
