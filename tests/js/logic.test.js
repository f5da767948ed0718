"use strict";
// Pure logic of static/chat/app.js: backoff, close codes, store, outbox, presence.

const test = require("node:test");
const assert = require("node:assert/strict");

const E = require("../../static/chat/app.js");
const { msg } = require("./helpers.js");

test("backoff: full jitter between 0 and min(30 s, 0.5 s * 2^attempt)", () => {
  const ceilings = [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000];
  ceilings.forEach((ceiling, attempt) => {
    assert.equal(E.backoffDelay(attempt, () => 0), 0);
    assert.equal(E.backoffDelay(attempt, () => 0.5), ceiling / 2);
    assert.equal(E.backoffDelay(attempt, () => 0.999999), Math.floor(ceiling * 0.999999));
  });
  // Never overflows, whatever the attempt.
  assert.equal(E.backoffDelay(10_000, () => 0.999999), Math.floor(30000 * 0.999999));
  assert.equal(E.backoffDelay(-3, () => 0.5), 250);
});

test("backoff: real randomness stays in range", () => {
  for (let attempt = 0; attempt < 12; attempt++) {
    const ceiling = Math.min(30000, 500 * 2 ** attempt);
    for (let i = 0; i < 200; i++) {
      const d = E.backoffDelay(attempt);
      assert.ok(d >= 0 && d < ceiling, `${d} for attempt ${attempt}`);
      assert.ok(Number.isInteger(d));
    }
  }
});

test("close codes: 4401 login, 4403/4400 stop with a message, others retry", () => {
  assert.equal(E.closeAction(4401).action, "login");
  for (const code of [4403, 4400]) {
    const d = E.closeAction(code);
    assert.equal(d.action, "stop");
    assert.ok(d.message.length > 20);
  }
  for (const code of [1000, 1001, 1006, 1008, 1011, 1012, 1013, 4000, 3000]) {
    assert.equal(E.closeAction(code).action, "retry", String(code));
  }
});

test("uuid4: well-formed with and without crypto.randomUUID", () => {
  const re = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
  assert.match(E.uuid4(), re);
  const noRandomUUID = { getRandomValues: (b) => globalThis.crypto.getRandomValues(b) };
  assert.match(E.uuid4(noRandomUUID), re);
  assert.match(E.uuid4(null), re);
  assert.notEqual(E.uuid4(noRandomUUID), E.uuid4(noRandomUUID));
});

test("wsUrl: scheme from the page, parameters encoded", () => {
  assert.equal(
    E.wsUrl({ protocol: "http:", host: "127.0.0.1:8000" }, "abc", "main", 7),
    "ws://127.0.0.1:8000/ws/abc/?thread_id=main&last_seq=7",
  );
  assert.equal(
    E.wsUrl({ protocol: "https:", host: "chat.example" }, "s", "a b/c", 0),
    "wss://chat.example/ws/s/?thread_id=a%20b%2Fc&last_seq=0",
  );
});

test("storableText: trimmed, no NUL, no lone surrogate", () => {
  assert.equal(E.storableText("  hi \n"), "hi");
  assert.equal(E.storableText("a\u0000b"), "ab");
  assert.equal(E.storableText("x\uD800y"), "x\uFFFDy");
  assert.equal(E.storableText("ok \uD83D\uDE00"), "ok \uD83D\uDE00");
  assert.equal(E.storableText("   "), "");
  assert.equal(E.storableText(null), "");
});

test("store: releases in seq order, each once", () => {
  const s = new E.MessageStore(0);
  assert.deepEqual(s.add(msg(1)).released.map((m) => m.seq), [1]);
  assert.equal(s.add(msg(1)).status, "duplicate");
  assert.deepEqual(s.add(msg(2)).released.map((m) => m.seq), [2]);
  assert.equal(s.lastSeq, 2);
  assert.equal(s.hasGap(), false);
});

test("store: a gap holds later messages back until it is filled", () => {
  const s = new E.MessageStore(0);
  s.add(msg(1));
  const r4 = s.add(msg(4));
  assert.equal(r4.status, "held");
  assert.deepEqual(r4.released, []);
  assert.equal(s.hasGap(), true);
  assert.equal(s.add(msg(4)).status, "duplicate"); // held ones dedup too
  assert.equal(s.add(msg(3)).status, "held");
  assert.equal(s.lastSeq, 1);
  const r2 = s.add(msg(2));
  assert.deepEqual(r2.released.map((m) => m.seq), [2, 3, 4]);
  assert.equal(s.lastSeq, 4);
  assert.equal(s.hasGap(), false);
});

test("store: any arrival order shows 1..n once, ascending", () => {
  for (let round = 0; round < 50; round++) {
    const seqs = Array.from({ length: 30 }, (_, i) => i + 1);
    const arrivals = [...seqs, ...seqs.filter(() => Math.random() < 0.3)];
    arrivals.sort(() => Math.random() - 0.5);
    const s = new E.MessageStore(0);
    const shown = [];
    for (const seq of arrivals) shown.push(...s.add(msg(seq)).released.map((m) => m.seq));
    assert.deepEqual(shown, seqs);
    assert.equal(s.lastSeq, 30);
  }
});

test("store: seeded from a page of history starts its window there", () => {
  const s = new E.MessageStore(0);
  const shown = s.seed([msg(41), msg(42), msg(43)]);
  assert.deepEqual(shown.map((m) => m.seq), [41, 42, 43]);
  assert.equal(s.floor, 40);
  assert.equal(s.lastSeq, 43);
  assert.equal(s.add(msg(12)).status, "duplicate"); // older than the window
  assert.equal(s.add(msg(44)).status, "added");
  const empty = new E.MessageStore(0);
  assert.deepEqual(empty.seed([]), []);
  assert.equal(empty.lastSeq, 0);
});

test("store: known seqs beyond lastSeq mean we are behind", () => {
  const s = new E.MessageStore(0);
  s.add(msg(1));
  assert.equal(s.behind(), false);
  s.know(5);
  assert.equal(s.behind(), true);
  for (const seq of [2, 3, 4, 5]) s.add(msg(seq));
  assert.equal(s.behind(), false);
  assert.equal(s.add({ seq: "x" }).status, "invalid");
  assert.equal(s.add({ seq: 0 }).status, "invalid");
});

test("outbox: persists across instances (a reload) and keeps client ids", () => {
  const storage = new E.MemoryStorage();
  let n = 0;
  const box = new E.Outbox(storage, "k", () => `id-${++n}`);
  box.add("one");
  box.add("two");
  const again = new E.Outbox(storage, "k");
  assert.deepEqual(
    again.items.map((it) => [it.id, it.text]),
    [
      ["id-1", "one"],
      ["id-2", "two"],
    ],
  );
  assert.equal(again.remove("id-1").text, "one");
  assert.equal(again.remove("id-1"), null);
  assert.deepEqual(new E.Outbox(storage, "k").items.map((it) => it.id), ["id-2"]);
  again.remove("id-2");
  assert.equal(storage.getItem("k"), null);
});

test("outbox: at most MAX_IN_FLIGHT on the wire; a new socket resends the rest", () => {
  const box = new E.Outbox(new E.MemoryStorage(), "k");
  for (let i = 0; i < 15; i++) box.add(`m${i}`);
  const first = box.nextBatch();
  assert.equal(first.length, E.MAX_IN_FLIGHT);
  assert.equal(box.nextBatch().length, 0);
  box.remove(first[0].id);
  assert.equal(box.nextBatch().length, 1);
  box.resetInFlight();
  const again = box.nextBatch();
  assert.equal(again.length, E.MAX_IN_FLIGHT);
  assert.equal(again[0].text, "m1"); // oldest first
});

test("outbox: corrupt or foreign storage content is ignored", () => {
  const storage = new E.MemoryStorage();
  storage.setItem("k", "{not json");
  assert.deepEqual(new E.Outbox(storage, "k").items, []);
  storage.setItem("k", JSON.stringify([{ id: 1 }, { id: "ok", text: "t" }, null]));
  assert.deepEqual(new E.Outbox(storage, "k").items.map((it) => it.id), ["ok"]);
  const broken = {
    getItem() {
      throw new Error("denied");
    },
    setItem() {
      throw new Error("full");
    },
    removeItem() {},
  };
  const box = new E.Outbox(broken, "k");
  assert.equal(box.add("still works").text, "still works");
});

test("presence: first frame per socket is the full list, then deltas", () => {
  const p = new E.Presence();
  p.apply({ joins: ["bob", "carol"], leaves: [] });
  assert.deepEqual(p.list("alice", true), ["alice", "bob", "carol"]);
  p.apply({ joins: ["dave", "alice"], leaves: ["carol"] });
  assert.deepEqual(p.list("alice", false), ["bob", "dave"]);
  assert.deepEqual(p.list("alice", true), ["alice", "bob", "dave"]);
  p.reset(); // a new socket: its snapshot replaces everything
  p.apply({ joins: ["erin"], leaves: [] });
  assert.deepEqual(p.list("alice", false), ["erin"]);
});

test("fetchMissing: pages over HTTP until caught up, dedup included", async () => {
  const all = Array.from({ length: 1203 }, (_, i) => msg(i + 1));
  const urls = [];
  const fetchJson = async (url) => {
    urls.push(url);
    const q = new URL(url, "http://x");
    const after = Number(q.searchParams.get("after_seq"));
    const limit = Number(q.searchParams.get("limit"));
    return { messages: all.slice(after, after + limit), last_seq: 1203 };
  };
  const store = new E.MessageStore(0);
  store.add(msg(1));
  store.add(msg(2));
  store.add(msg(1300)); // a live one beyond the gap: held back
  const shown = [];
  const pages = await E.fetchMissing({
    fetchJson,
    threadId: "main",
    store,
    onRelease: (ms) => shown.push(...ms.map((m) => m.seq)),
  });
  assert.equal(pages, 3);
  assert.equal(urls[0], "/api/threads/main/messages?after_seq=2&limit=500");
  assert.equal(urls[1], "/api/threads/main/messages?after_seq=502&limit=500");
  assert.deepEqual(shown, Array.from({ length: 1201 }, (_, i) => i + 3));
  assert.equal(store.lastSeq, 1203);
  assert.equal(store.hasGap(), true); // 1204..1299 are not there yet
});

test("fetchMissing: stops on an empty page and propagates errors", async () => {
  const store = new E.MessageStore(0);
  store.know(10);
  const pages = await E.fetchMissing({
    fetchJson: async () => ({ messages: [], last_seq: 10 }),
    threadId: "t",
    store,
  });
  assert.equal(pages, 1);
  const err = Object.assign(new Error("nope"), { status: 403 });
  await assert.rejects(
    E.fetchMissing({ fetchJson: async () => Promise.reject(err), threadId: "t", store }),
    (e) => e.status === 403,
  );
});
