"""Chat features in a real Chromium against two Daphnes: scroll-back, unread,
typing, private threads, links, day separators and "Reconnect now"."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from chat.models import Message, Thread
from chat.services import message_create, thread_join
from tests.conftest import assert_no_errors
from tests.web.test_browser import (
    SocketGate,
    log_in,
    send,
    seqs,
    status,
    texts,
    wait_connected,
)

pytestmark = pytest.mark.e2e


def post_many(thread_id: str, user, count: int, prefix: str = "old") -> None:
    thread_join(thread_id=thread_id, user=user)
    for i in range(1, count + 1):
        message_create(
            thread_id=thread_id,
            user=user,
            client_id=f"{prefix}{i}",
            text=f"{prefix} {i}",
        )


def set_hidden(page: Page, hidden: bool) -> None:
    """What the browser does when the tab is hidden or shown again."""
    state = "hidden" if hidden else "visible"
    page.evaluate(
        """state => {
          Object.defineProperty(document, 'visibilityState',
            {value: state, configurable: true});
          document.dispatchEvent(new Event('visibilitychange'));
        }""",
        state,
    )


def scroll_to_top(page: Page) -> None:
    page.locator("#scroller").evaluate(
        "s => { s.scrollTop = 0; s.dispatchEvent(new Event('scroll')); }"
    )


def test_scroll_back_keeps_the_place_and_merges_live_messages(
    daphne, contexts, alice, bob, password, artifacts
):
    post_many("main", bob, 120)
    now = timezone.now()
    # Two earlier days, so that day separators show.
    Message.objects.filter(thread_id="main", seq__lte=40).update(
        created_at=now - timedelta(days=3)
    )
    Message.objects.filter(thread_id="main", seq__gt=40, seq__lte=80).update(
        created_at=now - timedelta(days=1)
    )
    a, b = daphne("a"), daphne("b")
    page = log_in(contexts.new(), a, "alice", password)
    wait_connected(page)
    page_b = log_in(contexts.new(), b, "bob", password)
    wait_connected(page_b)
    expect(page.locator("#messages .msg").first).to_have_attribute("data-seq", "71")
    anchor = page.locator('#messages .msg[data-seq="71"]')
    scroll_to_top(page)
    expect(page.locator("#messages .msg")).to_have_count(100)
    # The message that was on top stays where the reader saw it: nothing jumps.
    top = anchor.evaluate(
        "el => el.getBoundingClientRect().top"
        " - document.getElementById('scroller').getBoundingClientRect().top"
    )
    assert 0 <= top < 120, top
    send(page_b, "live while scrolling back")
    expect(page.locator("#messages")).to_contain_text("live while scrolling back")
    scroll_to_top(page)
    expect(page.locator("#messages .msg")).to_have_count(121)
    expect(page.locator("#older-status")).to_have_text(
        "This is the beginning of the thread."
    )
    assert seqs(page) == list(range(1, 122))
    assert texts(page)[:2] == ["old 1", "old 2"]
    days = page.locator("#messages .day-sep")
    expect(days).to_have_count(3)
    expect(days.nth(1)).to_have_text("Yesterday")
    expect(days.nth(2)).to_have_text("Today")
    page.locator('#messages .msg[data-seq="39"]').scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "chat-scrollback.png"))
    assert_no_errors(a)
    assert_no_errors(b)


def test_unread_title_divider_and_sidebar_badge(
    daphne, contexts, alice, bob, password, artifacts
):
    post_many("main", bob, 3)
    post_many("side", bob, 2, prefix="side")
    a, b = daphne("a"), daphne("b")
    page = log_in(contexts.new(), a, "alice", password)
    wait_connected(page)
    page.goto(f"{a.http}/?thread=side")  # read there: its badge counts from now
    wait_connected(page)
    page.goto(f"{a.http}/")
    wait_connected(page)
    expect(page).to_have_title("#main · Emergence")
    page_b = log_in(contexts.new(), b, "bob", password)
    wait_connected(page_b)

    set_hidden(page, True)
    send(page_b, "are you there?")
    send(page_b, "hello?")
    expect(page).to_have_title("(2) #main · Emergence")
    set_hidden(page, False)
    expect(page).to_have_title("#main · Emergence")
    divider = page.locator("#messages .unread-divider")
    expect(divider).to_have_text("New messages")
    following = divider.evaluate("el => el.nextElementSibling.dataset.seq")
    assert following == "4"

    post_many("side", bob, 3, prefix="more")
    page.reload()
    wait_connected(page)
    badge = page.locator('.thread-list a[data-thread="side"] .badge')
    expect(badge).to_have_text("3")
    expect(badge).to_have_attribute("aria-label", "3 unread")
    set_hidden(page, True)
    send(page_b, "one more")
    expect(page).to_have_title("(1) #main · Emergence")
    set_hidden(page, False)
    page.screenshot(path=str(artifacts / "chat-unread.png"))
    assert_no_errors(a)
    assert_no_errors(b)


def test_typing_indicator_across_instances(
    daphne, contexts, alice, bob, password, artifacts
):
    a, b = daphne("a"), daphne("b")
    page = log_in(contexts.new(), a, "alice", password)
    wait_connected(page)
    page_b = log_in(contexts.new(), b, "bob", password)
    wait_connected(page_b)
    typing_frames: list[str] = []
    page_b.on(
        "websocket",
        lambda ws: ws.on(
            "framesent",
            lambda f: typing_frames.append(f) if '"typing"' in str(f) else None,
        ),
    )
    page_b.reload()  # so that the listener sees the page's socket
    wait_connected(page_b)
    box = page_b.get_by_label(re.compile(r"^Message to #"))
    box.press_sequentially("hello ali", delay=60)  # ~0.5 s of typing
    expect(page.locator("#typing")).to_have_text("bob is typing…")
    assert len(typing_frames) == 1, typing_frames
    page.screenshot(path=str(artifacts / "chat-typing.png"))
    expect(page_b.locator("#typing")).to_have_text("")  # never our own
    # Gone about 4 s after the last frame.
    expect(page.locator("#typing")).to_have_text("", timeout=8_000)
    assert_no_errors(a)
    assert_no_errors(b)


def test_private_thread_creation_and_refusal(
    daphne, contexts, alice, bob, make_user, password, artifacts
):
    make_user("carol")
    Thread.objects.create(id="taken")
    a, b = daphne("a"), daphne("b")
    page = log_in(contexts.new(), a, "alice", password)
    wait_connected(page)
    page.get_by_text("New private thread").click()
    page.get_by_label("Thread name").fill("plans")
    page.get_by_label("Members").fill("bob, nobody")
    page.get_by_role("button", name="Create").click()
    error = page.locator("#private-error")
    expect(error).to_have_text("unknown members: nobody")
    page.get_by_label("Thread name").fill("taken")
    page.get_by_label("Members").fill("bob")
    page.get_by_role("button", name="Create").click()
    expect(error).to_contain_text("exists already")
    page.get_by_label("Thread name").fill("plans")
    page.get_by_role("button", name="Create").click()
    page.wait_for_url(re.compile(r"\?thread=plans$"))
    wait_connected(page)
    private = page.locator("#private-threads")
    expect(private).to_contain_text("#plans")
    send(page, "our plans")
    expect(page.locator("#messages .msg.mine")).to_contain_text("our plans")
    page.screenshot(path=str(artifacts / "chat-private.png"))
    thread = Thread.objects.get(pk="plans")
    assert thread.private
    assert sorted(u.username for u in thread.members.all()) == ["alice", "bob"]

    page_b = log_in(contexts.new(), b, "bob", password)
    expect(page_b.locator("#private-threads")).to_contain_text("#plans")
    page_c = log_in(contexts.new(), b, "carol", password)
    expect(page_c.locator("#private-threads")).not_to_contain_text("plans")
    page_c.goto(f"{b.http}/?thread=plans")
    alert = page_c.locator("#alert")
    expect(alert).to_contain_text("private and you are not a member")
    expect(status(page_c)).to_have_attribute("data-state", "stopped")
    expect(page_c.get_by_label(re.compile(r"^Message to #"))).to_be_disabled()
    expect(page_c.locator("#empty")).to_be_hidden()
    assert "our plans" not in page_c.content()
    page_c.screenshot(path=str(artifacts / "chat-private-refused.png"))
    assert_no_errors(a)
    assert_no_errors(b)


def test_links_are_clickable_and_safe(
    daphne, contexts, alice, bob, password, artifacts
):
    a, b = daphne("a"), daphne("b")
    page = log_in(contexts.new(), a, "alice", password)
    wait_connected(page)
    page_b = log_in(contexts.new(), b, "bob", password)
    wait_connected(page_b)
    send(
        page_b,
        "docs at https://example.com/guide?x=1. not javascript:alert(1) "
        "<img src=x onerror=alert(1)>",
    )
    message = page.locator("#messages .msg .text").last
    expect(message).to_contain_text("<img src=x onerror=alert(1)>")
    links = message.locator("a")
    expect(links).to_have_count(1)
    expect(links).to_have_attribute("href", "https://example.com/guide?x=1")
    expect(links).to_have_attribute("rel", "noopener noreferrer")
    expect(links).to_have_attribute("target", "_blank")
    expect(links).to_have_text("https://example.com/guide?x=1")
    assert message.locator("img").count() == 0
    page.screenshot(path=str(artifacts / "chat-links.png"))
    assert_no_errors(a)
    assert_no_errors(b)


def test_reconnect_now_skips_the_backoff(daphne, contexts, alice, password, artifacts):
    server = daphne("a")
    context = contexts.new()
    # The longest backoff every time, so that the wait is long enough to skip.
    context.add_init_script("Math.random = () => 0.999;")
    gate = SocketGate(context)
    page = log_in(context, server, "alice", password)
    wait_connected(page)
    button = page.get_by_role("button", name="Reconnect now")
    expect(button).to_be_hidden()
    gate.shut()
    expect(page.locator("#status-text")).to_have_text(
        re.compile(r"Reconnecting in ([4-9]|\d\d) s"), timeout=15_000
    )
    expect(button).to_be_visible()
    page.screenshot(path=str(artifacts / "chat-reconnect-now.png"))
    gate.open = True
    button.click()
    wait_connected(page, timeout=3_000)  # well before the backoff would end
    expect(button).to_be_hidden()
    assert_no_errors(server)
