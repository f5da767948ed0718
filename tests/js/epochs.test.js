"use strict";
// Epochs (PROTOCOL.md "Epochs"): the client sends the epoch it holds, and on
// `reset: true` drops the thread's messages and seqs and reloads them over HTTP.

const test = require("node:test");
const assert = require("node:assert/strict");

const E = require("../../static/chat/app.js");
const { makeClock, makeView, msg, settle } = require("./helpers.js");

/** A ChatClient against a fake server: its messages and epoch can be rewritten. */
function chat(server) {
  const clock = makeClock();
  const view = makeView();
  view.resets = 0;
  view.reset = function () {
    this.resets += 1;
    this.shown = [];
  };
  const sent = [];
  const fetches = [];
  const conn = {
    isReady: () => true,
    send(frame) {
      sent.push(frame);
      return true;
    },
  };
  let n = 0;
  const client = new E.ChatClient({
    me: "alice",
    threadId: "main",
    store: new E.MessageStore(0),
    outbox: new E.Outbox(new E.MemoryStorage(), "box", () => `c${++n}`),
    conn,
    fetchJson: async (url) => {
      fetches.push(url);
      const q = new URL(url, "http://x");
      const limit = Number(q.searchParams.get("limit"));
      const all = server.messages;
      const page = q.searchParams.has("after_seq")
        ? all.filter((m) => m.seq > Number(q.searchParams.get("after_seq"))).slice(0, limit)
        : all.slice(-limit);
      const last = all.length ? all[all.length - 1].seq : 0;
      return { messages: page, last_seq: last, epoch: server.epoch };
    },
    view,
    timers: clock,
    log: () => {},
  });
  return { client, view, sent, fetches };
}

const range = (from, to, extra = {}) =>
  Array.from({ length: to - from + 1 }, (_, i) => msg(from + i, extra));

const hello = (extra = {}) => ({
  type: "ws:session_established",
  last_seq: 0,
  epoch: "e1",
  replay: 0,
  recovered: true,
  reset: false,
  ...extra,
});

test("wsUrl: the epoch is sent when well-formed, never otherwise", () => {
  const loc = { protocol: "http:", host: "h" };
  assert.equal(
    E.wsUrl(loc, "s", "main", 7, "Ab_-9"),
    "ws://h/ws/s/?thread_id=main&last_seq=7&epoch=Ab_-9",
  );
  for (const bad of [null, undefined, "", "a.b", "e".repeat(33), 5]) {
    assert.equal(E.wsUrl(loc, "s", "main", 7, bad), "ws://h/ws/s/?thread_id=main&last_seq=7");
  }
  assert.equal(E.latestUrl("a b", 50), "/api/threads/a%20b/messages?limit=50");
});

test("epoch: kept from the hello and sent with a resume", () => {
  const server = { messages: range(1, 3), epoch: "e1" };
  const t = chat(server);
  t.client.socketOpening();
  t.client.onFrame(hello({ last_seq: 3, replay: 3 }));
  for (const m of range(1, 3)) t.client.onFrame(m);
  assert.equal(t.client.epoch, "e1");
  t.client.onFrame(msg(5)); // a gap: resume, with the epoch we hold
  assert.deepEqual(t.sent, [{ type: "resume", last_seq: 3, epoch: "e1" }]);
});

test("reset in the hello: state dropped, reloaded over HTTP, reused seqs shown", async () => {
  const server = { messages: range(1, 10), epoch: "e1" };
  const t = chat(server);
  t.client.socketOpening();
  t.client.onFrame(hello({ last_seq: 10, replay: 10 }));
  for (const m of range(1, 10)) t.client.onFrame(m);
  assert.equal(t.client.store.lastSeq, 10);

  // The database went back in time: seqs 5-10 are gone; 5 and 6 are reused.
  server.messages = [...range(1, 4), ...range(5, 6, { text: "new" })];
  t.client.socketClosed();
  t.client.socketOpening();
  t.client.onFrame(hello({ last_seq: 6, recovered: false, reset: true }));
  assert.equal(t.view.resets, 1);
  assert.equal(t.client.store.lastSeq, 0); // nothing of the old history is kept
  await settle();
  assert.equal(t.fetches[0], "/api/threads/main/messages?limit=50");
  assert.deepEqual(t.view.shown.map((m) => [m.seq, m.text]), [
    [1, "text 1"],
    [2, "text 2"],
    [3, "text 3"],
    [4, "text 4"],
    [5, "new"],
    [6, "new"],
  ]);
  assert.equal(t.client.store.lastSeq, 6);
  // A new message reuses seq 7, which this client once held: shown, not dropped.
  t.client.onFrame(msg(7, { text: "fresh" }));
  assert.deepEqual(t.view.shown.at(-1), msg(7, { text: "fresh" }));
  assert.deepEqual(t.sent, []);
});

test("reset: live messages during the reload are shown once, in order", async () => {
  const server = { messages: range(1, 80), epoch: "e2" };
  const t = chat(server);
  t.client.socketOpening();
  t.client.onFrame(hello({ epoch: "e2", last_seq: 80, recovered: false, reset: true }));
  // The reload has read 1-80; 81 is committed after and arrives live first.
  server.messages = range(1, 81);
  t.client.onFrame(msg(81));
  await settle();
  // The newest page, then 81 caught up over HTTP; the older ones on scroll-back.
  assert.deepEqual(
    t.view.shown.map((m) => m.seq),
    range(31, 81).map((m) => m.seq),
  );
  assert.equal(t.client.store.floor, 30);
  assert.equal(t.client.epoch, "e2");
  assert.equal(t.fetches[1], "/api/threads/main/messages?after_seq=80&limit=500");
});

test("reset in a resumed: reloaded, the new epoch taken from the history", async () => {
  const server = { messages: range(1, 5), epoch: "e1" };
  const t = chat(server);
  t.client.socketOpening();
  t.client.onFrame(hello({ last_seq: 5, replay: 5 }));
  for (const m of range(1, 5)) t.client.onFrame(m);
  server.messages = range(1, 2);
  server.epoch = "e9";
  t.client.onFrame(msg(9)); // a gap: resume
  t.client.onFrame({ type: "resumed", replay: 0, recovered: false, reset: true });
  await settle();
  assert.equal(t.view.resets, 1);
  assert.deepEqual(t.view.shown.map((m) => m.seq), [1, 2]);
  assert.equal(t.client.epoch, "e9");
  assert.equal(t.client.resuming, false);
  t.client.onFrame(msg(4)); // another gap: the resume carries the new epoch
  assert.deepEqual(t.sent.at(-1), { type: "resume", last_seq: 2, epoch: "e9" });
});

test("a catch-up page of another epoch resets instead of mixing histories", async () => {
  // Restored between the hello (epoch e1, last_seq 3) and its catch-up.
  const server = { messages: range(1, 2), epoch: "e2" };
  const t = chat(server);
  t.client.socketOpening();
  t.client.onFrame(hello({ last_seq: 3 })); // behind: catches up over HTTP
  await settle();
  assert.equal(t.view.resets, 1);
  assert.deepEqual(t.view.shown.map((m) => m.seq), [1, 2]);
  assert.equal(t.client.epoch, "e2");
});

test("reset during a catch-up: the old pages are never shown", async () => {
  const server = { messages: range(1, 3), epoch: "e1" };
  const t = chat(server);
  t.client.socketOpening();
  t.client.onFrame(hello({ last_seq: 3 })); // behind: a catch-up of e1 is on its way
  server.messages = range(1, 2, { text: "restored" });
  server.epoch = "e2";
  t.client.socketOpening(); // reconnected before the catch-up's answer
  t.client.onFrame(hello({ epoch: "e2", last_seq: 2, recovered: false, reset: true }));
  await settle();
  assert.deepEqual(t.view.shown.map((m) => [m.seq, m.text]), [
    [1, "restored"],
    [2, "restored"],
  ]);
  assert.equal(t.client.store.lastSeq, 2);
  assert.equal(t.client.fetching, false);
});
