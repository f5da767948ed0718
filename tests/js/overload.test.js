"use strict";
// An instance over its connect capacity (PROTOCOL.md §2, "Overload"): the error
// frame `overloaded` with retry_after_ms, then close 1013. The client waits that
// long instead of its own backoff. A fake WebSocket and a manual clock.

const test = require("node:test");
const assert = require("node:assert/strict");

const E = require("../../static/chat/app.js");
const { makeClock, makeSocketClass, makeView } = require("./helpers.js");

function setup() {
  const clock = makeClock();
  const Socket = makeSocketClass();
  const states = [];
  let online = true;
  const conn = new E.Connection({
    url: () => "ws://x/ws/s/?thread_id=main",
    WebSocket: Socket,
    timers: clock,
    now: clock.now,
    random: () => 0.999,
    isOnline: () => online,
    log: () => {},
    onState: (state, info) => states.push([state, info]),
  });
  return {
    clock,
    Socket,
    conn,
    setOnline: (v) => {
      online = v;
    },
    last: () => states[states.length - 1],
  };
}

/** The server's refusal: accept, the error frame, close 1013. */
function refuse(socket, retryAfterMs) {
  socket.open();
  socket.frame({
    type: "error",
    code: "overloaded",
    detail: "server busy; try again later",
    retry_after_ms: retryAfterMs,
  });
  socket.serverClose(1013);
}

test("overload: waits retry_after_ms, not the backoff, then reconnects", () => {
  const t = setup();
  t.conn.start();
  refuse(t.Socket.last(), 2345);
  const [state, info] = t.last();
  assert.equal(state, "reconnecting");
  assert.equal(info.delay, 2345);
  assert.equal(info.retryAt, t.clock.now() + 2345);
  t.clock.advance(2344);
  assert.equal(t.Socket.sockets.length, 1);
  t.clock.advance(1);
  assert.equal(t.Socket.sockets.length, 2);
  assert.equal(t.last()[0], "connecting");
});

test("overload: refusals do not grow the client's own backoff", () => {
  const t = setup();
  t.conn.start();
  for (const wait of [300, 4000, 9000, 250, 10000]) {
    refuse(t.Socket.last(), wait);
    assert.equal(t.last()[1].delay, wait);
    t.clock.advance(wait);
  }
  assert.equal(t.conn.attempt, 0);
  // Then a plain drop: the first step of the backoff, as if nothing had happened.
  t.Socket.last().hello();
  t.Socket.last().serverClose(1006);
  assert.equal(t.last()[1].delay, Math.floor(500 * 0.999));
});

test("overload: 1013 without the frame, or the frame without 1013, is a backoff", () => {
  const t = setup();
  t.conn.start();
  t.Socket.last().open();
  t.Socket.last().serverClose(1013); // the database's 1013: no retry_after_ms
  assert.equal(t.last()[1].delay, Math.floor(500 * 0.999));
  t.clock.advance(1000);
  const socket = t.Socket.last();
  socket.open();
  socket.frame({ type: "error", code: "overloaded", retry_after_ms: 7000 });
  socket.serverClose(1006);
  assert.equal(t.last()[1].delay, Math.floor(1000 * 0.999));
});

test("overload: a wait asked for by one socket does not stick to the next", () => {
  const t = setup();
  t.conn.start();
  refuse(t.Socket.last(), 5000);
  t.clock.advance(5000);
  t.Socket.last().open();
  t.Socket.last().serverClose(1013);
  assert.equal(t.last()[1].delay, Math.floor(500 * 0.999));
});

test("overload: a visible tab or the network back does not cut the wait short", () => {
  const t = setup();
  t.conn.start();
  refuse(t.Socket.last(), 6000);
  t.clock.advance(1000);
  t.conn.retryNow(); // the tab became visible
  assert.equal(t.Socket.sockets.length, 1);
  assert.equal(t.last()[0], "reconnecting");
  t.setOnline(false);
  t.conn.wentOffline();
  assert.equal(t.last()[0], "offline");
  t.clock.advance(2000);
  t.setOnline(true);
  t.conn.retryNow(); // 'online': the remaining 3 s, then a connect
  assert.equal(t.last()[0], "reconnecting");
  assert.equal(t.last()[1].delay, 3000);
  t.clock.advance(2999);
  assert.equal(t.Socket.sockets.length, 1);
  t.clock.advance(1);
  assert.equal(t.Socket.sockets.length, 2);
  // Once the wait is over, retryNow connects at once again.
  t.Socket.last().open();
  t.Socket.last().serverClose(1006);
  t.conn.retryNow();
  assert.equal(t.Socket.sockets.length, 3);
});

test("overload: retry_after_ms is read defensively", () => {
  const frame = (ms) => ({ type: "error", code: "overloaded", retry_after_ms: ms });
  assert.equal(E.overloadDelay(frame(1500)), 1500);
  assert.equal(E.overloadDelay(frame(1500.7)), 1500);
  assert.equal(E.overloadDelay(frame(0)), 0);
  assert.equal(E.overloadDelay(frame(10 ** 9)), E.BACKOFF_CAP_MS);
  for (const bad of [undefined, null, "1500", -1, Number.NaN, Infinity]) {
    assert.equal(E.overloadDelay(frame(bad)), null);
  }
  assert.equal(E.overloadDelay({ type: "error", code: "rate_limited" }), null);
  assert.equal(E.overloadDelay({ type: "pong", retry_after_ms: 5 }), null);
  assert.equal(E.overloadDelay(null), null);
});

test("overload: a missing retry_after_ms falls back to the backoff", () => {
  const t = setup();
  t.conn.start();
  const socket = t.Socket.last();
  socket.open();
  socket.frame({ type: "error", code: "overloaded", detail: "busy" });
  socket.serverClose(1013);
  assert.equal(t.last()[1].delay, Math.floor(500 * 0.999));
});

test("overload: the chat shows a busy notice, not a refused frame", () => {
  const view = makeView();
  const client = new E.ChatClient({
    me: "alice",
    threadId: "main",
    store: new E.MessageStore(0),
    outbox: new E.Outbox(new E.MemoryStorage(), "k", () => "c1"),
    conn: { send: () => false, isReady: () => false },
    fetchJson: async () => ({ messages: [], last_seq: 0 }),
    view,
    timers: makeClock(),
    log: () => {},
  });
  client.onFrame({ type: "error", code: "overloaded", retry_after_ms: 800 });
  assert.equal(view.notices.length, 1);
  assert.match(view.notices[0], /busy/);
});
