"use strict";
// Pure logic of scroll-back, unread, typing, links and day separators.

const test = require("node:test");
const assert = require("node:assert/strict");
const E = require("../../static/chat/app.js");
const { makeClock, msg, makeView } = require("./helpers.js");

function client(options = {}) {
  const clock = makeClock();
  const view = makeView();
  const sent = [];
  const fetches = [];
  const all = options.serverMessages || [];
  const conn = {
    isReady: () => true,
    send(frame) {
      sent.push(frame);
      return true;
    },
  };
  const c = new E.ChatClient({
    me: "alice",
    threadId: "main",
    store: new E.MessageStore(0),
    outbox: new E.Outbox(new E.MemoryStorage(), "box"),
    conn,
    view,
    timers: clock,
    now: clock.now,
    log: () => {},
    fetchJson: async (url) => {
      fetches.push(url);
      const q = new URL(url, "http://x");
      const before = Number(q.searchParams.get("before_seq"));
      const limit = Number(q.searchParams.get("limit"));
      const older = all.filter((m) => m.seq < before);
      return { messages: older.slice(-limit), last_seq: all.length };
    },
  });
  return { c, clock, view, sent, fetches };
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => msg(from + i));

// --- scroll-back -------------------------------------------------------------------

test("mergeOlder keeps what is below the floor, ascending, once", () => {
  const store = new E.MessageStore(0);
  store.seed(range(51, 60));
  assert.equal(store.floor, 50);
  const got = E.mergeOlder(store, [msg(50), msg(48), msg(49), msg(49), msg(51), msg(60)]);
  assert.deepEqual(got.map((m) => m.seq), [48, 49, 50]);
  assert.equal(store.floor, 47);
  assert.equal(store.lastSeq, 60); // the resume point does not move
  assert.deepEqual(E.mergeOlder(store, [msg(48)]), []);
});

test("older pages merge with live messages by seq, without duplicates", async () => {
  const t = client({ serverMessages: range(1, 120) });
  t.c.seed(range(71, 120));
  t.c.onFrame({ type: "ws:session_established", last_seq: 120, replay: 0 });
  const page = t.c.loadOlder();
  t.c.onFrame(msg(121)); // live, while the older page is on its way
  const first = await page;
  assert.deepEqual(first.map((m) => m.seq), range(21, 70).map((m) => m.seq));
  assert.equal(t.fetches[0], "/api/threads/main/messages?before_seq=71&limit=50");
  await t.c.loadOlder();
  assert.equal(t.c.olderDone, true);
  const shown = [
    ...t.view.olders.flatMap((o) => o.messages).map((m) => m.seq),
    ...t.view.shown.map((m) => m.seq),
  ].sort((a, b) => a - b);
  assert.deepEqual(shown, Array.from({ length: 121 }, (_, i) => i + 1));
  assert.equal(new Set(shown).size, shown.length);
  assert.deepEqual(await t.c.loadOlder(), []); // done: no more requests
  assert.equal(t.fetches.length, 2);
});

test("one older page at a time; a thread that starts on the page never asks", async () => {
  const t = client({ serverMessages: range(1, 120) });
  t.c.seed(range(71, 120));
  const a = t.c.loadOlder();
  const b = t.c.loadOlder();
  await Promise.all([a, b]);
  assert.equal(t.fetches.length, 1);
  const fresh = client();
  fresh.c.seed(range(1, 5));
  await fresh.c.loadOlder();
  assert.equal(fresh.fetches.length, 0);
  assert.equal(fresh.c.olderDone, true);
});

// --- unread ---------------------------------------------------------------------------

test("unread counts others' messages while hidden, then gives the divider seq", () => {
  const t = client();
  t.c.seed(range(1, 3));
  t.c.setHidden(true);
  t.c.onFrame(msg(4));
  t.c.onFrame(msg(5, { user: "alice" })); // our own: never unread
  t.c.onFrame(msg(6));
  assert.equal(t.c.unread.count, 2);
  assert.equal(t.c.unread.title("#main · Emergence"), "(2) #main · Emergence");
  assert.deepEqual(t.view.unreads.slice(-1), [2]);
  t.c.setHidden(false);
  assert.deepEqual(t.view.dividers, [4]);
  assert.deepEqual(t.view.unreads.slice(-1), [0]);
  t.c.onFrame(msg(7)); // visible: not unread
  assert.equal(t.c.unread.count, 0);
  t.c.setHidden(true);
  t.c.setHidden(false);
  assert.deepEqual(t.view.dividers, [4]); // nothing new: no divider
});

test("read marks give sidebar badges only for threads opened before", () => {
  const marks = new E.ReadMarks(new E.MemoryStorage(), "read");
  assert.equal(marks.unread("side", 7), 0);
  marks.see("side", 4);
  assert.equal(marks.unread("side", 7), 3);
  assert.equal(marks.unread("side", 2), 0);
  marks.see("side", 7);
  assert.equal(marks.unread("side", 7), 0);
});

// --- typing ---------------------------------------------------------------------------

test("typing is sent at most once per 2 s while typing, at once after a send", () => {
  const t = client();
  t.c.onFrame({ type: "ws:session_established", last_seq: 0, replay: 0 });
  const typing = () => t.sent.filter((f) => f.type === "typing").length;
  for (let i = 0; i < 10; i++) {
    t.c.typed();
    t.clock.advance(150);
  }
  assert.equal(typing(), 1);
  t.clock.advance(600); // 2.1 s after the first
  t.c.typed();
  assert.equal(typing(), 2);
  t.c.submit("hello");
  t.c.typed();
  assert.equal(typing(), 3);
});

test("typing is not sent while disconnected", () => {
  const t = client();
  assert.equal(t.c.typed(), false);
  assert.equal(t.sent.length, 0);
});

test("an indicator shows who types and goes ~4 s after their last frame", () => {
  const t = client();
  t.c.onFrame({ type: "typing", thread_id: "main", user: "bob" });
  assert.equal(t.view.typings.at(-1), "bob is typing…");
  t.clock.advance(1000);
  t.c.onFrame({ type: "typing", thread_id: "main", user: "carol" });
  assert.equal(t.view.typings.at(-1), "bob and carol are typing…");
  t.clock.advance(3100); // bob's last frame 4.1 s ago
  assert.equal(t.view.typings.at(-1), "carol is typing…");
  t.clock.advance(1000);
  assert.equal(t.view.typings.at(-1), "");
  t.c.onFrame({ type: "typing", thread_id: "main", user: "bob" });
  t.c.onFrame(msg(1, { user: "bob" })); // his message arrived: he stopped
  assert.equal(t.view.typings.at(-1), "");
  t.c.onFrame({ type: "typing", thread_id: "other", user: "bob" });
  t.c.onFrame({ type: "typing", thread_id: "main", user: "alice" });
  assert.equal(t.view.typings.at(-1), "");
});

test("typingText names one, two, then several", () => {
  assert.equal(E.typingText([]), "");
  assert.equal(E.typingText(["a", "b", "c"]), "Several people are typing…");
});

// --- links ------------------------------------------------------------------------------

test("http(s) URLs become links; trailing punctuation stays text", () => {
  assert.deepEqual(E.linkTokens("see https://example.com/a?b=1. ok"), [
    { text: "see " },
    { text: "https://example.com/a?b=1", href: "https://example.com/a?b=1" },
    { text: ". ok" },
  ]);
  const wiki = E.linkTokens("(https://en.wikipedia.org/wiki/A_(b))");
  assert.equal(wiki[1].href, "https://en.wikipedia.org/wiki/A_(b)");
  assert.equal(wiki[2].text, ")");
  assert.deepEqual(E.linkTokens("HTTP://X.ORG")[0].href, "http://x.org/");
});

test("javascript:, data: and other schemes are never links", () => {
  for (const text of [
    "javascript:alert(1)",
    "click javascript://https://x.org/%0Aalert(1)",
    "data:text/html,<script>alert(1)</script>",
    "ftp://example.com/file",
    "<a href=x>hi</a>",
    "https://",
  ]) {
    const links = E.linkTokens(text).filter((p) => p.href);
    for (const link of links) assert.match(link.href, /^https?:\/\//);
    assert.equal(E.linkTokens(text).map((p) => p.text).join(""), text);
  }
  assert.deepEqual(E.linkTokens("javascript:alert(1)"), [{ text: "javascript:alert(1)" }]);
  assert.deepEqual(E.linkTokens(""), []);
});

// --- day separators -----------------------------------------------------------------

test("a separator above the first message of each local day", () => {
  const at = (d, h) => new Date(2026, 0, d, h, 30).toISOString();
  assert.deepEqual(E.daySeparators([at(1, 9), at(1, 23), at(2, 0), at(2, 5), at(5, 1)]), [
    0, 2, 4,
  ]);
  assert.deepEqual(E.daySeparators([]), []);
  assert.deepEqual(E.daySeparators([undefined, at(1, 9), "nonsense", at(1, 10)]), [1]);
  const now = new Date(2026, 0, 5, 12).getTime();
  assert.equal(E.dayLabel(at(5, 1), now), "Today");
  assert.equal(E.dayLabel(at(4, 1), now), "Yesterday");
  assert.match(E.dayLabel(at(1, 1), now), /2026/);
});

// --- thread creation errors ------------------------------------------------------------

test("refused thread creations are explained", () => {
  assert.match(E.threadCreateError(409, { error: "exists" }), /exists already/);
  assert.equal(
    E.threadCreateError(400, { error: "unknown members: zed" }),
    "unknown members: zed",
  );
  assert.match(E.threadCreateError(500, null), /try again/);
});
