"use strict";
// A server's graceful shutdown (1012): reconnects spread over RESTART_SPREAD_MS.

const test = require("node:test");
const assert = require("node:assert/strict");

const E = require("../../static/chat/app.js");
const { makeClock, makeSocketClass } = require("./helpers.js");

/** A stable connection closed with `code`; the reconnect delay it chose. */
function delayAfter(code, randomValue) {
  const clock = makeClock();
  const Socket = makeSocketClass();
  const states = [];
  const conn = new E.Connection({
    url: () => "ws://x/ws/s/?thread_id=main&last_seq=0",
    WebSocket: Socket,
    timers: clock,
    now: clock.now,
    random: () => randomValue,
    isOnline: () => true,
    log: () => {},
    onState: (state, info) => states.push([state, info]),
    onFrame: () => {},
  });
  conn.start();
  Socket.last().hello();
  clock.advance(E.STABLE_MS);
  Socket.last().serverClose(code, "restart");
  const [state, info] = states[states.length - 1];
  assert.equal(state, "reconnecting");
  return info.delay;
}

test("drain: after 1012 the sockets of one batch reconnect spread over 1 s", () => {
  const randoms = [0, 0.1, 0.25, 0.5, 0.75, 0.999];
  const delays = randoms.map((r) => delayAfter(1012, r));
  assert.deepEqual(
    delays,
    randoms.map((r) => Math.floor(r * E.RESTART_SPREAD_MS)),
  );
  assert.equal(E.RESTART_SPREAD_MS, 1000);
  // Other closes keep the plain backoff: 0.5 s at most on the first attempt.
  assert.equal(delayAfter(1006, 0.999), Math.floor(0.999 * 500));
});

test("drain: the spread only widens the backoff window, never narrows it", () => {
  assert.equal(E.backoffDelay(0, () => 0.5, undefined, undefined, 1000), 500);
  assert.equal(E.backoffDelay(3, () => 0.5, undefined, undefined, 1000), 2000);
  assert.equal(E.backoffDelay(10, () => 0.5, undefined, undefined, 1000), 15000);
  assert.equal(E.backoffDelay(0, () => 0.5), 250);
});
