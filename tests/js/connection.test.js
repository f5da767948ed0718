"use strict";
// The socket life cycle (Connection) and the frame handling (ChatClient), with a
// fake WebSocket, a manual clock and a fake HTTP history.

const test = require("node:test");
const assert = require("node:assert/strict");

const E = require("../../static/chat/app.js");
const { makeClock, makeSocketClass, msg, makeView, settle } = require("./helpers.js");

function setup(options = {}) {
  const clock = makeClock();
  const Socket = makeSocketClass();
  const states = [];
  const logs = [];
  let online = options.online === undefined ? true : options.online;
  const frames = [];
  const conn = new E.Connection({
    url: () => `ws://x/ws/s/?thread_id=main&last_seq=${options.lastSeq || 0}`,
    WebSocket: Socket,
    timers: clock,
    now: clock.now,
    random: options.random || (() => 0.5),
    isOnline: () => online,
    log: (line) => logs.push(line),
    onState: (state, info) => states.push([state, info]),
    onFrame: (frame) => frames.push(frame),
    onLogin: () => states.push(["LOGIN-CALLBACK", {}]),
  });
  return {
    clock,
    Socket,
    conn,
    states,
    logs,
    frames,
    setOnline: (v) => {
      online = v;
    },
    lastState: () => states[states.length - 1][0],
  };
}

test("connection: connects, reports connected on ws:session_established", () => {
  const t = setup();
  t.conn.start();
  assert.equal(t.lastState(), "connecting");
  t.Socket.last().hello();
  assert.equal(t.lastState(), "connected");
  assert.equal(t.conn.isReady(), true);
  assert.equal(t.frames[0].type, "ws:session_established");
});

test("connection: 1006/1012/1013/1011 retry with growing full-jitter delays", () => {
  const t = setup({ random: () => 0.999 });
  t.conn.start();
  const delays = [];
  for (const code of [1006, 1012, 1013, 1011, 1006, 1006, 1006, 1006, 1006]) {
    t.Socket.last().serverClose(code, "bye");
    const [state, info] = t.states[t.states.length - 1];
    assert.equal(state, "reconnecting");
    delays.push(info.delay);
    t.clock.advance(info.delay);
    assert.equal(t.lastState(), "connecting");
  }
  assert.deepEqual(
    delays,
    [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000].map((c) =>
      Math.floor(c * 0.999),
    ),
  );
  assert.equal(t.Socket.sockets.length, 10);
  // Every close is logged with its code and reason.
  assert.equal(t.logs.length, 9);
  assert.match(t.logs[1], /code=1012 reason=bye/);
});

test("connection: attempts reset only after an established socket lived 10 s", () => {
  const t = setup({ random: () => 0.999 });
  t.conn.start();
  t.Socket.last().serverClose(1006);
  t.clock.advance(600);
  t.Socket.last().serverClose(1006);
  t.clock.advance(1100);
  assert.equal(t.conn.attempt, 2);
  // Established but dropped at once: no reset (a flapping server).
  t.Socket.last().hello();
  t.clock.advance(2000);
  t.Socket.last().serverClose(1012);
  assert.equal(t.states[t.states.length - 1][1].delay, Math.floor(2000 * 0.999));
  t.clock.advance(2000);
  // Established and stable for 10 s: the next wait starts from 0.5 s again.
  t.Socket.last().hello();
  t.clock.advance(E.STABLE_MS);
  t.Socket.last().serverClose(1006);
  assert.equal(t.states[t.states.length - 1][1].delay, Math.floor(500 * 0.999));
});

test("connection: 4401 goes to login, no retry", () => {
  const t = setup();
  t.conn.start();
  t.Socket.last().open();
  t.Socket.last().serverClose(4401, "unauthenticated");
  assert.deepEqual(
    t.states.slice(-2).map((s) => s[0]),
    ["login", "LOGIN-CALLBACK"],
  );
  t.clock.advance(120_000);
  assert.equal(t.Socket.sockets.length, 1);
  assert.match(t.logs[0], /code=4401 reason=unauthenticated/);
});

for (const code of [4403, 4400]) {
  test(`connection: ${code} stops with a message and never retries`, () => {
    const t = setup();
    t.conn.start();
    t.Socket.last().open();
    t.Socket.last().serverClose(code);
    const [state, info] = t.states[t.states.length - 1];
    assert.equal(state, "stopped");
    assert.equal(info.code, code);
    assert.ok(info.message);
    t.conn.retryNow(); // 'online' or a visible tab do not revive it
    t.clock.advance(300_000);
    assert.equal(t.Socket.sockets.length, 1);
  });
}

test("connection: paused while offline, retried at once on 'online'", () => {
  const t = setup();
  t.conn.start();
  t.Socket.last().hello();
  t.setOnline(false);
  t.Socket.last().serverClose(1006);
  assert.equal(t.lastState(), "offline");
  t.clock.advance(600_000);
  assert.equal(t.Socket.sockets.length, 1); // no attempts while offline
  t.setOnline(true);
  t.conn.retryNow();
  assert.equal(t.lastState(), "connecting");
  assert.equal(t.Socket.sockets.length, 2);
});

test("connection: going offline while waiting cancels the timer", () => {
  const t = setup();
  t.conn.start();
  t.Socket.last().serverClose(1006);
  assert.equal(t.lastState(), "reconnecting");
  t.setOnline(false);
  t.conn.wentOffline();
  assert.equal(t.lastState(), "offline");
  t.clock.advance(60_000);
  assert.equal(t.Socket.sockets.length, 1);
});

test("connection: a visible tab retries at once instead of waiting", () => {
  const t = setup({ random: () => 0.999 });
  t.conn.start();
  for (let i = 0; i < 6; i++) {
    t.Socket.last().serverClose(1006);
    t.clock.advance(t.states[t.states.length - 1][1].delay);
  }
  t.Socket.last().serverClose(1006);
  assert.ok(t.states[t.states.length - 1][1].delay > 20_000);
  t.conn.retryNow();
  assert.equal(t.Socket.sockets.length, 8);
  // The backoff timer is cancelled: only the new socket's connect timeout is left.
  assert.equal(t.conn.retryTimer, null);
  assert.equal(t.clock.pending(), 1);
  t.Socket.last().hello();
  t.clock.advance(E.PING_INTERVAL_MS - 1);
  assert.equal(t.Socket.sockets.length, 8);
});

test("connection: ping every 20 s; no pong within 10 s closes and reconnects", () => {
  const t = setup();
  t.conn.start();
  const ws = t.Socket.last();
  ws.hello();
  t.clock.advance(E.PING_INTERVAL_MS);
  assert.equal(ws.sent.length, 1);
  assert.equal(ws.sent[0].type, "ping");
  ws.frame({ type: "pong", ts: ws.sent[0].ts });
  t.clock.advance(E.PING_INTERVAL_MS);
  assert.equal(ws.sent.length, 2);
  t.clock.advance(E.PONG_TIMEOUT_MS); // no pong this time
  assert.equal(ws.closedWith.code, 4000);
  assert.match(t.logs[0], /code=4000 reason=heartbeat timeout/);
  assert.equal(t.lastState(), "reconnecting");
  // A late close event of the abandoned socket changes nothing.
  ws.serverClose(1006);
  assert.equal(t.logs.length, 1);
  t.clock.advance(1000);
  assert.equal(t.Socket.sockets.length, 2);
});

test("connection: a handshake that never completes is given up after 15 s", () => {
  const t = setup();
  t.conn.start();
  t.clock.advance(E.CONNECT_TIMEOUT_MS);
  assert.match(t.logs[0], /connect timeout/);
  assert.equal(t.lastState(), "reconnecting");
});

// --- ChatClient ------------------------------------------------------------------

function chat(options = {}) {
  const clock = makeClock();
  const view = makeView();
  const sent = [];
  const fetches = [];
  const conn = {
    ready: true,
    isReady() {
      return this.ready;
    },
    send(frame) {
      if (!this.ready) return false;
      sent.push(frame);
      return true;
    },
  };
  const history = options.history || [];
  const storage = options.storage || new E.MemoryStorage();
  let n = 0;
  const client = new E.ChatClient({
    me: "alice",
    threadId: "main",
    store: new E.MessageStore(0),
    outbox: new E.Outbox(storage, "box", () => `c${++n}`),
    conn,
    fetchJson: async (url) => {
      fetches.push(url);
      const q = new URL(url, "http://x");
      const after = Number(q.searchParams.get("after_seq"));
      const limit = Number(q.searchParams.get("limit"));
      const all = options.serverMessages || [];
      return {
        messages: all.filter((m) => m.seq > after).slice(0, limit),
        last_seq: all.length ? all[all.length - 1].seq : 0,
      };
    },
    view,
    timers: clock,
    log: () => {},
  });
  client.seed(history);
  return { client, view, sent, fetches, conn, clock, storage };
}

const hello = (extra = {}) => ({
  type: "ws:session_established",
  last_seq: 0,
  replay: 0,
  recovered: true,
  ...extra,
});

test("client: history, replay and live overlap: each message shown once, in order", () => {
  const t = chat({ history: [msg(3), msg(4), msg(5)] });
  t.client.socketOpening();
  t.client.onFrame(hello({ last_seq: 7, replay: 2 }));
  t.client.onFrame(msg(6));
  t.client.onFrame(msg(7));
  t.client.onFrame(msg(7)); // a live copy of a replayed one
  t.client.onFrame(msg(5));
  t.client.onFrame(msg(8));
  assert.deepEqual(t.view.shown.map((m) => m.seq), [3, 4, 5, 6, 7, 8]);
  assert.deepEqual(t.sent, []);
});

test("client: a seq gap sends resume; the replay fills it in order", () => {
  const t = chat();
  t.client.socketOpening();
  t.client.onFrame(hello());
  t.client.onFrame(msg(1));
  t.client.onFrame(msg(4));
  assert.deepEqual(t.sent, [{ type: "resume", last_seq: 1 }]);
  t.client.onFrame(msg(5)); // still behind the gap: no second resume
  assert.equal(t.sent.length, 1);
  t.client.onFrame({ type: "resumed", replay: 4, recovered: true });
  for (const seq of [2, 3, 4, 5]) t.client.onFrame(msg(seq));
  assert.deepEqual(t.view.shown.map((m) => m.seq), [1, 2, 3, 4, 5]);
  assert.equal(t.client.resuming, false);
  assert.deepEqual(t.fetches, []);
});

test("client: recovered=false on connect fetches the missing messages over HTTP", async () => {
  const serverMessages = Array.from({ length: 1200 }, (_, i) => msg(i + 1));
  const t = chat({ history: [msg(1), msg(2)], serverMessages });
  t.client.socketOpening();
  t.client.onFrame(hello({ last_seq: 1200, replay: 0, recovered: false }));
  t.client.onFrame(msg(1201)); // live, beyond the gap: held back
  await settle();
  await settle();
  assert.equal(t.fetches.length, 3);
  assert.match(t.fetches[0], /after_seq=2&limit=500$/);
  const shown = t.view.shown.map((m) => m.seq);
  assert.deepEqual(shown, Array.from({ length: 1201 }, (_, i) => i + 1));
});

test("client: recovered=false on resume also falls back to HTTP", async () => {
  const serverMessages = Array.from({ length: 9 }, (_, i) => msg(i + 1));
  const t = chat({ serverMessages });
  t.client.socketOpening();
  t.client.onFrame(hello());
  t.client.onFrame(msg(1));
  t.client.onFrame(msg(9));
  assert.equal(t.sent[0].type, "resume");
  t.client.onFrame({ type: "resumed", replay: 0, recovered: false });
  await settle();
  assert.deepEqual(t.view.shown.map((m) => m.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
});

test("client: typed while disconnected -> queued, sent after reconnect, pending until ack", () => {
  const t = chat();
  t.conn.ready = false;
  t.client.socketClosed();
  const item = t.client.submit("  hello bob  ");
  assert.equal(item.text, "hello bob");
  assert.deepEqual(t.sent, []);
  assert.deepEqual(t.view.lastPending().items, [
    { id: "c1", text: "hello bob", state: "queued" },
  ]);
  // Reconnect: sent once the replay is through, marked as sending.
  t.conn.ready = true;
  t.client.socketOpening();
  t.client.onFrame(hello({ last_seq: 1, replay: 1 }));
  assert.deepEqual(t.sent, []); // not before the replay
  t.client.onFrame(msg(1));
  assert.deepEqual(t.sent, [{ type: "chat.message", id: "c1", text: "hello bob" }]);
  assert.equal(t.view.lastPending().items[0].state, "sending");
  // The ack comes first: the item leaves the queue but stays "sent" until shown.
  t.client.onFrame({ type: "ack", id: "c1", seq: 2, duplicate: false });
  assert.deepEqual(t.view.lastPending().items, []);
  assert.deepEqual(t.view.lastPending().sent, ["c1"]);
  t.client.onFrame(msg(2, { id: "c1", user: "alice", text: "hello bob" }));
  assert.deepEqual(t.view.lastPending().sent, []);
  assert.deepEqual(t.view.shown.map((m) => m.seq), [1, 2]);
  assert.equal(t.storage.getItem("box"), null);
});

test("client: the queue survives a reload; a message stored before it is not resent", () => {
  const storage = new E.MemoryStorage();
  const first = chat({ storage });
  first.conn.ready = false;
  first.client.submit("stored already");
  first.client.submit("not stored");
  // Reload: the page's history shows c1 as stored (its ack was lost).
  const second = chat({
    storage,
    history: [msg(1, { id: "c1", user: "alice", text: "stored already" })],
  });
  assert.deepEqual(
    second.client.outbox.items.map((it) => it.id),
    ["c2"],
  );
  second.client.socketOpening();
  second.client.onFrame(hello({ last_seq: 1 }));
  assert.deepEqual(second.sent, [{ type: "chat.message", id: "c2", text: "not stored" }]);
});

test("client: a duplicate ack for a message already shown clears it", () => {
  const t = chat();
  t.client.submit("again");
  t.client.socketOpening();
  // Replay shows our message (stored before the drop), then the resend's ack.
  t.client.onFrame(hello({ last_seq: 1, replay: 1 }));
  t.client.onFrame(msg(1, { id: "c1", user: "alice", text: "again" }));
  assert.deepEqual(t.sent, []); // shown by the replay: nothing to resend
  t.client.onFrame({ type: "ack", id: "c1", seq: 1, duplicate: true });
  assert.deepEqual(t.view.lastPending().items, []);
  assert.deepEqual(t.view.shown.map((m) => m.text), ["again"]);
});

test("client: an ack whose message never arrives triggers a resume", () => {
  const t = chat();
  t.client.socketOpening();
  t.client.onFrame(hello());
  t.client.submit("lost broadcast");
  t.client.onFrame({ type: "ack", id: "c1", seq: 1, duplicate: false });
  t.clock.advance(2500);
  assert.deepEqual(t.sent.at(-1), { type: "resume", last_seq: 0 });
});

test("client: beyond MAX_IN_FLIGHT the rest waits for acks", () => {
  const t = chat();
  t.client.socketOpening();
  t.client.onFrame(hello());
  for (let i = 0; i < E.MAX_IN_FLIGHT + 2; i++) t.client.submit(`m${i}`);
  assert.equal(t.sent.length, E.MAX_IN_FLIGHT);
  const states = t.view.lastPending().items.map((it) => it.state);
  assert.deepEqual(states.slice(-3), ["sending", "waiting", "waiting"]);
  t.client.onFrame({ type: "ack", id: "c1", seq: 1, duplicate: false });
  assert.equal(t.sent.length, E.MAX_IN_FLIGHT + 1);
  assert.equal(t.sent.at(-1).text, `m${E.MAX_IN_FLIGHT}`);
});

test("client: rate_limited resends what is unacknowledged", () => {
  const t = chat();
  t.client.socketOpening();
  t.client.onFrame(hello());
  t.client.submit("a");
  t.client.submit("b");
  assert.equal(t.sent.length, 2);
  t.client.onFrame({ type: "error", code: "rate_limited", detail: "slow down" });
  t.clock.advance(1000);
  assert.deepEqual(
    t.sent.slice(2).map((f) => f.id),
    ["c1", "c2"],
  );
  assert.equal(t.view.notices.length, 1);
});

test("client: presence snapshot per socket, then joins and leaves", () => {
  const t = chat();
  t.client.socketOpening();
  t.client.onFrame(hello());
  assert.deepEqual(t.view.presences.at(-1), ["alice"]);
  t.client.onFrame({ type: "presence", thread_id: "main", joins: ["alice", "bob"], leaves: [] });
  assert.deepEqual(t.view.presences.at(-1), ["alice", "bob"]);
  t.client.onFrame({ type: "presence", thread_id: "main", joins: ["carol"], leaves: ["bob"] });
  assert.deepEqual(t.view.presences.at(-1), ["alice", "carol"]);
  t.client.onFrame({ type: "presence", thread_id: "other", joins: ["zed"], leaves: [] });
  assert.deepEqual(t.view.presences.at(-1), ["alice", "carol"]);
  t.client.socketClosed(); // last known list, without ourselves
  assert.deepEqual(t.view.presences.at(-1), ["carol"]);
});

test("client: HTTP 403 during catch-up shows the refusal; 401 goes to login", async () => {
  for (const [status, check] of [
    [403, (v) => assert.equal(v.fatals.length, 1)],
    [401, (v) => assert.equal(v.logins, 1)],
  ]) {
    const t = chat();
    t.client.fetchJson = async () => {
      throw Object.assign(new Error("no"), { status });
    };
    t.client.socketOpening();
    t.client.onFrame(hello({ last_seq: 50, recovered: false }));
    await settle();
    check(t.view);
  }
});
