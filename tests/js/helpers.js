"use strict";
// Fakes for the client's injected dependencies: a manual clock and a WebSocket.

/** setTimeout/setInterval on a manual clock; advance(ms) fires what is due. */
function makeClock(start = 1_000_000) {
  let now = start;
  let nextId = 1;
  const timers = new Map(); // id -> {at, fn, every}
  const clock = {
    now: () => now,
    setTimeout(fn, ms) {
      const id = nextId++;
      timers.set(id, { at: now + Math.max(0, ms || 0), fn, every: null });
      return id;
    },
    clearTimeout(id) {
      timers.delete(id);
    },
    setInterval(fn, ms) {
      const id = nextId++;
      timers.set(id, { at: now + ms, fn, every: ms });
      return id;
    },
    clearInterval(id) {
      timers.delete(id);
    },
    /** Move time forward, firing due timers in order. */
    advance(ms) {
      const until = now + ms;
      for (;;) {
        let due = null;
        for (const [id, t] of timers) {
          if (t.at <= until && (due === null || t.at < due[1].at)) due = [id, t];
        }
        if (due === null) break;
        const [id, t] = due;
        now = t.at;
        if (t.every) t.at += t.every;
        else timers.delete(id);
        t.fn();
      }
      now = until;
    },
    pending: () => timers.size,
  };
  return clock;
}

/** A WebSocket stand-in: records what was sent, lets a test play the server. */
function makeSocketClass() {
  const sockets = [];
  class FakeSocket {
    constructor(url) {
      this.url = url;
      this.sent = [];
      this.readyState = 0;
      this.closedWith = null;
      sockets.push(this);
    }
    send(data) {
      this.sent.push(JSON.parse(data));
    }
    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = 2;
    }
    // --- the server's side ---
    open() {
      this.readyState = 1;
      if (this.onopen) this.onopen({});
    }
    frame(obj) {
      if (this.onmessage) this.onmessage({ data: JSON.stringify(obj) });
    }
    hello(extra = {}) {
      this.open();
      this.frame({
        type: "ws:session_established",
        session_id: "s",
        thread_id: "main",
        user: "alice",
        resumed: false,
        last_seq: 0,
        replay: 0,
        recovered: true,
        instance: "a",
        ...extra,
      });
    }
    serverClose(code, reason = "") {
      this.readyState = 3;
      if (this.onclose) this.onclose({ code, reason });
    }
  }
  FakeSocket.sockets = sockets;
  FakeSocket.last = () => sockets[sockets.length - 1];
  return FakeSocket;
}

function msg(seq, extra = {}) {
  return {
    type: "chat.message",
    thread_id: "main",
    seq,
    id: `m${seq}`,
    user: "bob",
    text: `text ${seq}`,
    created_at: "2026-01-01T00:00:00+00:00",
    ...extra,
  };
}

/** A view that records what the client asked it to show. */
function makeView() {
  return {
    shown: [],
    pendingCalls: [],
    presences: [],
    notices: [],
    fatals: [],
    logins: 0,
    release(messages) {
      this.shown.push(...messages);
    },
    pending(items, sent) {
      this.pendingCalls.push({ items, sent });
    },
    presence(names) {
      this.presences.push(names);
    },
    notice(text) {
      this.notices.push(text);
    },
    fatal(message) {
      this.fatals.push(message);
    },
    login() {
      this.logins += 1;
    },
    olders: [],
    dividers: [],
    unreads: [],
    typings: [],
    older(messages, done) {
      this.olders.push({ messages: messages || [], done });
    },
    divider(seq) {
      this.dividers.push(seq);
    },
    unread(count) {
      this.unreads.push(count);
    },
    typing(text) {
      this.typings.push(text);
    },
    lastPending() {
      return this.pendingCalls[this.pendingCalls.length - 1];
    },
  };
}

/** Let queued promise callbacks run. */
async function settle() {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}

module.exports = { makeClock, makeSocketClass, msg, makeView, settle };
