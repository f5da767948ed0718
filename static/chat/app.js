/*
 * Emergence web client: one file, no build step (PROTOCOL.md is the contract).
 *
 * The top half is pure logic with no DOM: backoff, close-code policy, the message
 * store (dedup, seq order, gap detection), the outgoing queue, presence, the HTTP
 * catch-up loop, the socket life cycle (Connection) and the frame handling
 * (ChatClient). Node's test runner loads this file as a CommonJS module
 * (tests/js/); every browser dependency (WebSocket, timers, storage, fetch) is
 * passed in. The bottom half (DomView, boot) runs only in the browser page.
 *
 * Reconnects: wait random(0, min(30 s, 0.5 s * 2^attempt)) ("full jitter"); the
 * attempt counter goes back to 0 when a connection that reached
 * ws:session_established had lived STABLE_MS (10 s) when it closed, so a server
 * that accepts and drops at once still sees the delay grow. A server over its
 * connect capacity sends an `error` frame `overloaded` with `retry_after_ms`, then
 * closes with 1013: the next attempt waits that long instead (PROTOCOL.md §2,
 * "Overload"), and the attempt counter stays as it was. A 1012 (the server's
 * graceful shutdown, which closes its sockets in batches about 1 s apart) waits
 * random(0, at least RESTART_SPREAD_MS): one batch reaches the other instances
 * spread over the gap to the next, not in the same instant.
 */
"use strict";

const Emergence = (function () {
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_CAP_MS = 30000;
  const STABLE_MS = 10000;
  const RESTART_SPREAD_MS = 1000;
  const PING_INTERVAL_MS = 20000;
  const PONG_TIMEOUT_MS = 10000;
  const CONNECT_TIMEOUT_MS = 15000;
  const MAX_IN_FLIGHT = 10;
  const HISTORY_PAGE = 500;
  const MAX_TEXT = 4000;
  const CLIENT_CLOSE = 4000; // our own code when we give a socket up (timeouts)
  const WS_OPEN = 1;

  // --- backoff and close codes ---------------------------------------------------

  /**
   * Full-jitter exponential backoff: random(0, min(cap, base * 2^attempt)) ms, the
   * window widened to `floor` ms when given.
   */
  function backoffDelay(attempt, random, base, cap, floor) {
    const rnd = random || Math.random;
    const b = base === undefined ? BACKOFF_BASE_MS : base;
    const c = cap === undefined ? BACKOFF_CAP_MS : cap;
    const exp = Math.min(Math.max(0, Math.floor(attempt) || 0), 30);
    return Math.floor(rnd() * Math.max(floor || 0, Math.min(c, b * 2 ** exp)));
  }

  /**
   * The wait an `overloaded` error frame asks for, in ms (at most the backoff cap),
   * or null when the frame is not one or carries no usable retry_after_ms.
   */
  function overloadDelay(frame) {
    if (!frame || frame.type !== "error" || frame.code !== "overloaded") return null;
    const ms = frame.retry_after_ms;
    if (typeof ms !== "number" || !Number.isFinite(ms) || ms < 0) return null;
    return Math.min(Math.floor(ms), BACKOFF_CAP_MS);
  }

  /** What to do after a close code: "login", "stop" (with a message) or "retry". */
  function closeAction(code) {
    if (code === 4401) {
      return { action: "login", message: "Your login has expired." };
    }
    if (code === 4403) {
      return {
        action: "stop",
        message:
          "You cannot join this thread: it is private and you are not a member " +
          "(or this chat session belongs to another user). Pick another thread.",
      };
    }
    if (code === 4400) {
      return {
        action: "stop",
        message:
          "The server refused this connection as malformed: thread names use " +
          "only letters, digits, '-' and '_' (at most 64). Pick another thread.",
      };
    }
    return { action: "retry", message: "" };
  }

  // --- ids and URLs ----------------------------------------------------------------

  /** A v4 UUID; crypto.randomUUID exists only in secure contexts, so a fallback. */
  function uuid4(cryptoObj) {
    const c = cryptoObj === undefined ? globalThis.crypto : cryptoObj;
    if (c && typeof c.randomUUID === "function") return c.randomUUID();
    const b = new Uint8Array(16);
    if (c && typeof c.getRandomValues === "function") c.getRandomValues(b);
    else for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  /** ws[s]://host/ws/<session>/?thread_id=<thread>&last_seq=<n>[&epoch=<e>]. */
  function wsUrl(loc, sessionId, threadId, lastSeq, epoch) {
    const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
    return (
      `${scheme}//${loc.host}/ws/${encodeURIComponent(sessionId)}/` +
      `?thread_id=${encodeURIComponent(threadId)}&last_seq=${lastSeq}` +
      (isEpoch(epoch) ? `&epoch=${epoch}` : "")
    );
  }

  // A thread's epoch (PROTOCOL.md "Epochs"); anything else is never sent (4400).
  const EPOCH_RE = /^[A-Za-z0-9_-]{1,32}$/;
  const RELOAD_PAGE = 50; // messages loaded after a reset; older ones on scroll-back

  function isEpoch(value) {
    return typeof value === "string" && EPOCH_RE.test(value);
  }

  /** The newest `limit` messages of a thread (with its last_seq and epoch). */
  function latestUrl(threadId, limit) {
    return `/api/threads/${encodeURIComponent(threadId)}/messages?limit=${limit}`;
  }

  /**
   * The text as the server stores it: trimmed, without NUL characters and with
   * lone surrogates replaced (the server refuses both with bad_frame, and a queued
   * message it refuses would be resent after every reconnect).
   */
  function storableText(text) {
    if (typeof text !== "string") return "";
    let clean = text.replace(/\u0000/g, "");
    if (typeof clean.toWellFormed === "function") clean = clean.toWellFormed();
    else clean = clean.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, "\uFFFD");
    return clean.trim();
  }

  function historyUrl(threadId, afterSeq, limit) {
    return (
      `/api/threads/${encodeURIComponent(threadId)}/messages` +
      `?after_seq=${afterSeq}&limit=${limit}`
    );
  }

  // --- the message store ------------------------------------------------------------

  /**
   * Messages of one thread, released for display strictly in seq order, each once.
   *
   * `lastSeq` is the highest seq such that every seq in (floor, lastSeq] has been
   * released; it is what the client resumes from. A message beyond lastSeq + 1 is
   * held back (a gap) until the missing ones arrive. Anything at or below lastSeq
   * is a duplicate (or older than the page's window) and is dropped.
   */
  class MessageStore {
    constructor(floor) {
      this.floor = floor || 0;
      this.lastSeq = this.floor;
      this.known = this.lastSeq; // the highest seq the server said exists
      this.ahead = new Map(); // seq -> message, held back behind a gap
    }

    /** Start from a page of history (seq ascending); returns the released list. */
    seed(messages) {
      const valid = (messages || []).filter((m) => Number.isInteger(m && m.seq));
      if (valid.length && this.lastSeq === 0 && this.ahead.size === 0) {
        const first = Math.min(...valid.map((m) => m.seq));
        this.floor = first - 1;
        this.lastSeq = this.floor;
        this.known = Math.max(this.known, this.floor);
      }
      const released = [];
      for (const m of valid) released.push(...this.add(m).released);
      return released;
    }

    /** Add one chat.message: {status: added|held|duplicate|invalid, released}. */
    add(message) {
      const seq = message && message.seq;
      if (!Number.isInteger(seq) || seq < 1) return { status: "invalid", released: [] };
      this.known = Math.max(this.known, seq);
      if (seq <= this.lastSeq || this.ahead.has(seq)) {
        return { status: "duplicate", released: [] };
      }
      if (seq > this.lastSeq + 1) {
        this.ahead.set(seq, message);
        return { status: "held", released: [] };
      }
      const released = [message];
      this.lastSeq = seq;
      while (this.ahead.has(this.lastSeq + 1)) {
        this.lastSeq += 1;
        released.push(this.ahead.get(this.lastSeq));
        this.ahead.delete(this.lastSeq);
      }
      return { status: "added", released };
    }

    /** The server says seq exists (ws:session_established last_seq, an ack). */
    know(seq) {
      if (Number.isInteger(seq)) this.known = Math.max(this.known, seq);
    }

    hasGap() {
      return this.ahead.size > 0;
    }

    /** Whether messages the server has are still missing here. */
    behind() {
      return this.known > this.lastSeq;
    }
  }

  // --- the outgoing queue -------------------------------------------------------------

  /** A Storage-like object in memory (tests, or when sessionStorage is unusable). */
  class MemoryStorage {
    constructor() {
      this.data = new Map();
    }
    getItem(key) {
      return this.data.has(key) ? this.data.get(key) : null;
    }
    setItem(key, value) {
      this.data.set(key, String(value));
    }
    removeItem(key) {
      this.data.delete(key);
    }
  }

  /**
   * Messages typed but not yet acknowledged, kept in (session) storage under `key`
   * so that they survive a reload; each keeps its client id, so a resend is
   * idempotent on the server. At most MAX_IN_FLIGHT are on the wire at once.
   */
  class Outbox {
    constructor(storage, key, makeId) {
      this.storage = storage;
      this.key = key;
      this.makeId = makeId || uuid4;
      this.inFlight = new Set();
      this.items = this.load();
    }

    load() {
      try {
        const raw = this.storage.getItem(this.key);
        const parsed = raw ? JSON.parse(raw) : [];
        if (!Array.isArray(parsed)) return [];
        return parsed.filter(
          (it) => it && typeof it.id === "string" && typeof it.text === "string",
        );
      } catch (_err) {
        return [];
      }
    }

    save() {
      try {
        if (this.items.length) this.storage.setItem(this.key, JSON.stringify(this.items));
        else this.storage.removeItem(this.key);
      } catch (_err) {
        // Storage full or disabled: the queue still lives for this page.
      }
    }

    add(text, queuedAt) {
      const item = { id: this.makeId(), text, queuedAt: queuedAt || Date.now() };
      this.items.push(item);
      this.save();
      return item;
    }

    has(id) {
      return this.items.some((it) => it.id === id);
    }

    /** Remove an acknowledged (or seen) message; returns it, or null. */
    remove(id) {
      const index = this.items.findIndex((it) => it.id === id);
      if (index < 0) return null;
      const [item] = this.items.splice(index, 1);
      this.inFlight.delete(id);
      this.save();
      return item;
    }

    /** The next messages to put on the wire, oldest first; marks them in flight. */
    nextBatch(max) {
      const limit = (max === undefined ? MAX_IN_FLIGHT : max) - this.inFlight.size;
      const batch = [];
      for (const item of this.items) {
        if (batch.length >= limit) break;
        if (!this.inFlight.has(item.id)) {
          this.inFlight.add(item.id);
          batch.push(item);
        }
      }
      return batch;
    }

    /** A new socket (or a refusal): everything unacknowledged is sent again. */
    resetInFlight() {
      this.inFlight.clear();
    }
  }

  // --- presence -------------------------------------------------------------------------

  /** Who is present. The first presence frame on a socket is the full list. */
  class Presence {
    constructor() {
      this.users = new Set();
      this.snapshotPending = true;
    }

    /** A new socket: its first presence frame replaces the list. */
    reset() {
      this.snapshotPending = true;
    }

    apply(frame) {
      const joins = Array.isArray(frame.joins) ? frame.joins : [];
      const leaves = Array.isArray(frame.leaves) ? frame.leaves : [];
      if (this.snapshotPending) {
        this.users = new Set();
        this.snapshotPending = false;
      }
      for (const u of leaves) this.users.delete(u);
      for (const u of joins) this.users.add(u);
    }

    /** Sorted names; `me` is listed exactly when we are connected ourselves. */
    list(me, connected) {
      const all = new Set(this.users);
      if (me && connected) all.add(me);
      else if (me) all.delete(me);
      return Array.from(all).sort((a, b) => a.localeCompare(b));
    }
  }

  // --- HTTP catch-up ---------------------------------------------------------------------

  /**
   * Fetch what the store misses over HTTP, HISTORY_PAGE at a time, until it has
   * the thread's last_seq. `fetchJson(url)` resolves to the parsed body or rejects
   * with an Error carrying `status`. Calls onRelease(messages) for each page.
   */
  async function fetchMissing(opts) {
    const { fetchJson, threadId, store, onRelease } = opts;
    const limit = opts.limit || HISTORY_PAGE;
    let pages = 0;
    for (;;) {
      const after = store.lastSeq;
      const body = await fetchJson(historyUrl(threadId, after, limit));
      pages += 1;
      // Another epoch: these pages continue another history (onEpoch resets).
      if (opts.onEpoch && opts.onEpoch(body.epoch) === false) break;
      const messages = Array.isArray(body.messages) ? body.messages : [];
      store.know(body.last_seq);
      const released = [];
      for (const m of messages) released.push(...store.add(m).released);
      if (released.length && onRelease) onRelease(released);
      const last = Number.isInteger(body.last_seq) ? body.last_seq : 0;
      if (messages.length < limit || store.lastSeq === after || store.lastSeq >= last) {
        break;
      }
    }
    return pages;
  }

  // --- the socket life cycle -------------------------------------------------------------

  /**
   * One logical connection: opens sockets, reconnects with backoff, pings, and
   * honours close codes. opts: url() -> string, WebSocket, timers {setTimeout,
   * clearTimeout, setInterval, clearInterval}, now(), random(), isOnline(), log(),
   * and callbacks onState(state, info), onFrame(frame), onOpen(), onLogin(info).
   *
   * States: connecting, connected, reconnecting (info.delay, info.retryAt), offline,
   * stopped (info.message), login.
   */
  class Connection {
    constructor(opts) {
      this.opts = opts;
      this.timers = opts.timers || globalThis;
      this.now = opts.now || Date.now;
      this.random = opts.random || Math.random;
      this.isOnline = opts.isOnline || (() => true);
      this.log = opts.log || ((...args) => console.log(...args));
      this.attempt = 0;
      this.ws = null;
      this.state = "idle";
      this.info = {};
      this.established = false;
      this.establishedAt = 0;
      this.retryTimer = null;
      this.retryAfter = null; // the current socket's `overloaded` wait, in ms
      this.serverWaitUntil = 0; // until then, retryNow() does not connect
      this.connectTimer = null;
      this.pingTimer = null;
      this.pongTimer = null;
    }

    setState(state, info) {
      this.state = state;
      this.info = info || {};
      if (this.opts.onState) this.opts.onState(state, this.info);
    }

    start() {
      this.connect();
    }

    connect() {
      this.clearRetry();
      if (this.state === "stopped" || this.state === "login" || this.ws) return;
      if (!this.isOnline()) {
        this.setState("offline");
        return;
      }
      const ws = new this.opts.WebSocket(this.opts.url());
      this.ws = ws;
      this.established = false;
      this.retryAfter = null;
      this.setState("connecting", { attempt: this.attempt });
      this.connectTimer = this.timers.setTimeout(
        () => this.abandon(ws, "connect timeout"),
        CONNECT_TIMEOUT_MS,
      );
      ws.onmessage = (event) => this.received(ws, event);
      ws.onclose = (event) => this.closed(ws, event.code, event.reason);
      ws.onerror = () => {}; // a close event always follows
      if (this.opts.onOpen) this.opts.onOpen();
    }

    received(ws, event) {
      if (ws !== this.ws) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (_err) {
        return;
      }
      if (!frame || typeof frame !== "object") return;
      if (frame.type === "pong") {
        this.timers.clearTimeout(this.pongTimer);
        this.pongTimer = null;
        return;
      }
      const overload = overloadDelay(frame);
      if (overload !== null) this.retryAfter = overload;
      if (frame.type === "ws:session_established") {
        this.established = true;
        this.establishedAt = this.now();
        this.timers.clearTimeout(this.connectTimer);
        this.connectTimer = null;
        this.startHeartbeat(ws);
        this.setState("connected", { instance: frame.instance });
      }
      if (this.opts.onFrame) this.opts.onFrame(frame);
    }

    startHeartbeat(ws) {
      this.stopHeartbeat();
      this.pingTimer = this.timers.setInterval(() => {
        if (ws !== this.ws || this.pongTimer) return;
        this.send({ type: "ping", ts: this.now() });
        this.pongTimer = this.timers.setTimeout(
          () => this.abandon(ws, "heartbeat timeout"),
          PONG_TIMEOUT_MS,
        );
      }, PING_INTERVAL_MS);
    }

    stopHeartbeat() {
      this.timers.clearInterval(this.pingTimer);
      this.timers.clearTimeout(this.pongTimer);
      this.pingTimer = null;
      this.pongTimer = null;
    }

    /** Give a socket up ourselves (no answer in time) and go on as after a close. */
    abandon(ws, reason) {
      if (ws !== this.ws) return;
      ws.onmessage = null;
      ws.onclose = null;
      try {
        ws.close(CLIENT_CLOSE, reason);
      } catch (_err) {
        // already closing
      }
      this.closed(ws, CLIENT_CLOSE, `${reason} (client)`);
    }

    closed(ws, code, reason) {
      if (ws !== this.ws) return;
      this.ws = null;
      this.log(`websocket closed: code=${code} reason=${reason || ""}`);
      this.stopHeartbeat();
      this.timers.clearTimeout(this.connectTimer);
      this.connectTimer = null;
      if (this.established && this.now() - this.establishedAt >= STABLE_MS) {
        this.attempt = 0;
      }
      this.established = false;
      if (this.state === "stopped") return;
      const decision = closeAction(code);
      if (decision.action === "login") {
        this.setState("login", { code, message: decision.message });
        if (this.opts.onLogin) this.opts.onLogin(decision);
        return;
      }
      if (decision.action === "stop") {
        this.setState("stopped", { code, message: decision.message });
        return;
      }
      // Refused as overloaded: the server said when to come back. Its wait already
      // grows with the crowd, so our own backoff does not grow on top of it.
      const serverDelay = code === 1013 ? this.retryAfter : null;
      this.retryAfter = null;
      this.scheduleRetry(serverDelay, code === 1012 ? RESTART_SPREAD_MS : 0);
    }

    /**
     * Reconnect after `serverDelay` ms when given, else after the backoff delay
     * (its jitter window at least `spread` ms).
     */
    scheduleRetry(serverDelay, spread) {
      this.clearRetry();
      const fromServer = typeof serverDelay === "number";
      this.serverWaitUntil = fromServer ? this.now() + serverDelay : 0;
      if (!this.isOnline()) {
        this.setState("offline");
        return;
      }
      let delay = serverDelay;
      if (!fromServer) {
        delay = backoffDelay(this.attempt, this.random, undefined, undefined, spread);
        this.attempt += 1;
      }
      this.retryTimer = this.timers.setTimeout(() => {
        this.retryTimer = null;
        this.connect();
      }, delay);
      this.setState("reconnecting", { delay, retryAt: this.now() + delay });
    }

    clearRetry() {
      if (this.retryTimer !== null) this.timers.clearTimeout(this.retryTimer);
      this.retryTimer = null;
    }

    /** Connect now if we are waiting (the network came back, the tab became visible). */
    retryNow() {
      if (this.state !== "reconnecting" && this.state !== "offline") return;
      // A wait the server asked for (overloaded) is not cut short: a crowd of
      // tabs made visible or back online at once would be the storm again.
      const left = this.serverWaitUntil - this.now();
      if (left > 0) {
        if (this.state === "offline") this.scheduleRetry(left);
        return;
      }
      this.connect();
    }

    /** navigator.onLine went false: stop waiting on a timer until 'online'. */
    wentOffline() {
      if (this.state === "reconnecting") {
        this.clearRetry();
        this.setState("offline");
      }
    }

    isReady() {
      return Boolean(this.ws && this.established && this.ws.readyState === WS_OPEN);
    }

    send(frame) {
      if (!this.ws || this.ws.readyState !== WS_OPEN) return false;
      this.ws.send(JSON.stringify(frame));
      return true;
    }

    /** The page is going away: close and never reconnect. */
    stop(message) {
      this.clearRetry();
      this.stopHeartbeat();
      const ws = this.ws;
      this.setState("stopped", { message: message || "" });
      if (ws) {
        try {
          ws.close(1000, "client stop");
        } catch (_err) {
          // ignore
        }
      }
    }
  }

  // --- frames to state -----------------------------------------------------------------

  /**
   * The chat logic between a Connection and a view: replay and resume, HTTP
   * catch-up, the outgoing queue and presence. opts: me, threadId, store, outbox,
   * presence, conn (anything with send/isReady), fetchJson, view, timers, log.
   * The view gets release(messages), pending(items), presence(names), notice(text),
   * fatal(message) and login().
   */
  class ChatClient {
    constructor(opts) {
      this.me = opts.me;
      this.threadId = opts.threadId;
      this.store = opts.store;
      this.outbox = opts.outbox;
      this.presence = opts.presence || new Presence();
      this.conn = opts.conn || null;
      this.fetchJson = opts.fetchJson;
      this.view = opts.view;
      this.timers = opts.timers || globalThis;
      this.log = opts.log || ((...args) => console.log(...args));
      this.replayLeft = 0; // replayed frames still to come after a hello
      this.resumeLeft = 0; // replayed frames still to come after a `resumed`
      this.resuming = false; // a `resume` is on the wire
      this.fetching = false; // an HTTP catch-up runs
      this.sent = new Set(); // acknowledged ids whose message is not yet shown
      this.connected = false;
      this.ackCheckTimer = null;
      this.unread = new Unread(this.me);
      this.typingOut = new TypingSender();
      this.typingIn = new TypingWatch();
      this.typingTimer = null;
      this.olderLoading = false; // a before_seq page is on its way
      this.olderDone = false; // the thread's first message is shown
      this.now = opts.now || Date.now;
      this.epoch = null; // the thread's epoch as the server last told us
      this.reloading = false; // a reset's reload over HTTP runs
    }

    /** The page's history: show it; drop queued ids that it shows as stored. */
    seed(history) {
      this.released(this.store.seed(history));
      this.emitPending();
    }

    /** A new socket is being opened. */
    socketOpening() {
      this.connected = false;
      this.replayLeft = 0;
      this.resumeLeft = 0;
      this.resuming = false;
      this.outbox.resetInFlight();
      this.presence.reset();
      this.emitPending();
    }

    /** The socket closed (any reason). */
    socketClosed() {
      this.connected = false;
      this.resuming = false;
      this.outbox.resetInFlight();
      this.emitPending();
      this.emitPresence();
    }

    onFrame(frame) {
      switch (frame.type) {
        case "ws:session_established":
          return this.onHello(frame);
        case "chat.message":
          return this.onMessage(frame);
        case "ack":
          return this.onAck(frame);
        case "resumed":
          return this.onResumed(frame);
        case "presence":
          if (frame.thread_id && frame.thread_id !== this.threadId) return undefined;
          this.presence.apply(frame);
          return this.emitPresence();
        case "error":
          return this.onError(frame);
        case "typing":
          return this.onTyping(frame);
        default:
          return undefined;
      }
    }

    onHello(hello) {
      this.connected = true;
      if (hello.reset === true) this.resetThread(hello.epoch);
      else if (isEpoch(hello.epoch)) this.epoch = hello.epoch;
      this.store.know(hello.last_seq);
      this.replayLeft = Number.isInteger(hello.replay) ? hello.replay : 0;
      this.emitPresence();
      if (hello.recovered === false) this.catchUp();
      if (this.replayLeft === 0) this.afterReplay();
    }

    afterReplay() {
      this.flush();
      if (this.store.behind() || this.store.hasGap()) this.catchUp();
    }

    onMessage(frame) {
      if (frame.thread_id && frame.thread_id !== this.threadId) return;
      if (this.reloading) {
        // Reloading after a reset: the reload or a catch-up after it shows this
        // (a replay to a socket reopened meanwhile too; the reload then flushes).
        this.store.know(frame.seq);
        if (this.replayLeft > 0) this.replayLeft -= 1;
        return;
      }
      const result = this.store.add(frame);
      this.released(result.released);
      if (this.replayLeft > 0) {
        this.replayLeft -= 1;
        if (this.replayLeft === 0) this.afterReplay();
        return;
      }
      if (this.resumeLeft > 0) {
        this.resumeLeft -= 1;
        if (this.resumeLeft === 0) this.resumeDone();
        return;
      }
      if (this.store.hasGap()) this.requestResume();
    }

    /** Show messages (in order, once); a queued one of ours that shows is done. */
    released(messages) {
      if (!messages.length) return;
      let changed = false;
      for (const m of messages) {
        if (m.user === this.me && (this.outbox.remove(m.id) || this.sent.has(m.id))) {
          this.sent.delete(m.id);
          changed = true;
        }
      }
      this.view.release(messages);
      if (changed) this.emitPending();
      this.unread.add(messages);
      for (const m of messages) this.typingIn.stopped(m.user);
      this.emitUnread();
      this.emitTyping();
    }

    // --- scroll-back, unread, typing -------------------------------------------------

    /** Load the page of messages before the first one shown (scroll-back). */
    loadOlder() {
      if (this.olderLoading || this.olderDone) return Promise.resolve([]);
      const store = this.store;
      if (store.floor <= 0) {
        this.olderDone = true;
        if (this.view.older) this.view.older([], true);
        return Promise.resolve([]);
      }
      this.olderLoading = true;
      const url = olderUrl(this.threadId, store.floor + 1, OLDER_PAGE);
      return this.fetchJson(url).then(
        (body) => {
          this.olderLoading = false;
          // A reset replaced the store meanwhile: this page belongs to the old one.
          if (store !== this.store) return [];
          const got = Array.isArray(body.messages) ? body.messages : [];
          const older = mergeOlder(store, got);
          this.olderDone = got.length < OLDER_PAGE || store.floor <= 0;
          if (this.view.older) this.view.older(older, this.olderDone);
          return older;
        },
        (err) => {
          this.olderLoading = false;
          this.log(`older messages fetch failed: ${err && err.message}`);
          if (this.view.older) this.view.older(null, false);
          return [];
        },
      );
    }

    /** The tab was hidden or shown: unread counting, divider and title. */
    setHidden(hidden) {
      if (hidden) {
        this.unread.setHidden(true);
        return;
      }
      const first = this.unread.seen();
      if (first !== null && this.view.divider) this.view.divider(first);
      this.emitUnread();
    }

    emitUnread() {
      if (this.view.unread) this.view.unread(this.unread.count);
    }

    /** The user typed in the composer: tell the thread, at most every 2 s. */
    typed() {
      if (!this.connected || !this.conn || !this.conn.isReady()) return false;
      if (!this.typingOut.shouldSend(this.now())) return false;
      return this.conn.send({ type: "typing" });
    }

    onTyping(frame) {
      if (frame.thread_id && frame.thread_id !== this.threadId) return;
      if (frame.user === this.me) return;
      this.typingIn.seen(frame.user, this.now());
      this.emitTyping();
    }

    /** Show who is typing; refresh when the next name expires. */
    emitTyping() {
      if (this.typingTimer !== null) this.timers.clearTimeout(this.typingTimer);
      this.typingTimer = null;
      const names = this.typingIn.active(this.now());
      if (this.view.typing) this.view.typing(typingText(names));
      const next = this.typingIn.nextExpiry();
      if (next !== null) {
        this.typingTimer = this.timers.setTimeout(
          () => this.emitTyping(),
          Math.max(0, next - this.now()),
        );
      }
    }

    onAck(ack) {
      const item = this.outbox.remove(ack.id);
      this.store.know(ack.seq);
      if (item && Number.isInteger(ack.seq) && ack.seq > this.store.lastSeq) {
        // Stored; it shows once its chat.message arrives in seq order.
        this.sent.add(ack.id);
        this.scheduleAckCheck();
      }
      this.emitPending();
      this.flush();
    }

    /** An ack beyond what we have: the message should follow; if not, resume. */
    scheduleAckCheck() {
      if (this.ackCheckTimer !== null) return;
      this.ackCheckTimer = this.timers.setTimeout(() => {
        this.ackCheckTimer = null;
        if (this.connected && this.store.behind()) this.requestResume();
      }, 2000);
    }

    requestResume() {
      if (this.resuming || this.fetching || this.reloading || !this.connected) return;
      const frame = { type: "resume", last_seq: this.store.lastSeq };
      if (isEpoch(this.epoch)) frame.epoch = this.epoch;
      if (this.conn.send(frame)) {
        this.resuming = true;
      }
    }

    onResumed(frame) {
      if (frame.reset === true) {
        this.resuming = false;
        this.resetThread(null);
        return;
      }
      if (frame.recovered === false) {
        this.resuming = false;
        this.catchUp();
        return;
      }
      this.resumeLeft = Number.isInteger(frame.replay) ? frame.replay : 0;
      if (this.resumeLeft === 0) this.resumeDone();
    }

    resumeDone() {
      this.resuming = false;
      // Replayed and still missing something: HTTP is the last word.
      if (this.store.hasGap() || this.store.behind()) this.catchUp();
    }

    /** Fetch the missing messages over HTTP (one loop at a time). */
    catchUp() {
      if (this.fetching || this.reloading) return;
      this.fetching = true;
      const store = this.store;
      fetchMissing({
        fetchJson: this.fetchJson,
        threadId: this.threadId,
        store,
        onRelease: (messages) => {
          if (store === this.store) this.released(messages);
        },
        onEpoch: (epoch) => store === this.store && this.historyEpoch(epoch),
      })
        .then(
          () => {
            this.fetching = false;
            // A reset replaced the store meanwhile: its own catch-up waited for us.
            if (store !== this.store && !this.reloading && this.connected) this.afterReplay();
          },
          (err) => {
            this.fetching = false;
            const status = err && err.status;
            if (status === 401) {
              this.view.login();
            } else if (status === 403) {
              this.view.fatal(closeAction(4403).message);
            } else {
              this.log(`history fetch failed: ${err && err.message}; retrying`);
              this.timers.setTimeout(() => {
                if (this.connected) this.catchUp();
              }, 2000);
            }
          },
        );
    }

    /** A history page's epoch: false (and a reset) when it is not the one we hold. */
    historyEpoch(epoch) {
      if (!isEpoch(epoch) || epoch === this.epoch) return true;
      if (this.epoch === null) {
        this.epoch = epoch;
        return true;
      }
      this.resetThread(epoch);
      return false;
    }

    /**
     * The server's history is not the one we hold (PROTOCOL.md "Epochs"): drop
     * every message and seq of the thread and load it again over HTTP. Queued
     * messages stay queued: a resend of a stored one is answered as a duplicate.
     */
    resetThread(epoch) {
      this.epoch = isEpoch(epoch) ? epoch : null;
      this.store = new MessageStore(0);
      this.sent.clear();
      this.replayLeft = 0;
      this.resumeLeft = 0;
      this.resuming = false;
      this.olderDone = false;
      this.reloading = true;
      if (this.view.reset) this.view.reset();
      this.emitPending();
      this.reload(this.store);
    }

    /** Load the newest page after a reset, then catch up on what came meanwhile. */
    reload(interim) {
      this.fetchJson(latestUrl(this.threadId, RELOAD_PAGE)).then(
        (body) => {
          if (interim !== this.store) return; // another reset replaced it
          const got = Array.isArray(body.messages) ? body.messages : [];
          const page = got.filter((m) => m && Number.isInteger(m.seq) && m.seq >= 1);
          const last = Number.isInteger(body.last_seq) ? body.last_seq : 0;
          const store = new MessageStore(page.length ? page[0].seq - 1 : last);
          store.know(interim.known);
          store.know(last);
          if (isEpoch(body.epoch)) this.epoch = body.epoch;
          this.store = store;
          this.reloading = false;
          this.released(store.seed(page));
          if (this.connected) this.afterReplay();
        },
        (err) => {
          if (interim !== this.store) return;
          const status = err && err.status;
          if (status === 401) return this.view.login();
          if (status === 403) return this.view.fatal(closeAction(4403).message);
          this.log(`history reload failed: ${err && err.message}; retrying`);
          this.timers.setTimeout(() => {
            if (interim === this.store) this.reload(interim);
          }, 2000);
          return undefined;
        },
      );
    }

    onError(frame) {
      this.log(`server error frame: ${frame.code} ${frame.detail || ""}`);
      if (frame.code === "rate_limited") {
        // Which frame was refused is not said: resend what is unacknowledged.
        this.outbox.resetInFlight();
        this.timers.setTimeout(() => this.flush(), 1000);
        this.view.notice("Sending too fast; retrying in a moment.");
      } else if (frame.code === "db_unavailable") {
        this.view.notice("The server's database is unavailable; reconnecting.");
      } else if (frame.code === "overloaded") {
        this.view.notice("The server is busy; reconnecting when it asks us to.");
      } else {
        this.view.notice(`The server refused a frame: ${frame.detail || frame.code}`);
      }
    }

    /** Queue a message (always through the outbox) and send it if we can. */
    submit(text) {
      const clean = storableText(text);
      if (!clean) return null;
      if (clean.length > MAX_TEXT) {
        this.view.notice(`A message has at most ${MAX_TEXT} characters.`);
        return null;
      }
      const item = this.outbox.add(clean);
      this.typingOut.reset();
      this.emitPending();
      this.flush();
      return item;
    }

    flush() {
      if (!this.connected || !this.conn || !this.conn.isReady()) return;
      const batch = this.outbox.nextBatch();
      for (const item of batch) {
        this.conn.send({ type: "chat.message", id: item.id, text: item.text });
      }
      if (batch.length) this.emitPending();
    }

    pendingItems() {
      const items = this.outbox.items.map((it) => ({
        id: it.id,
        text: it.text,
        state: !this.connected
          ? "queued"
          : this.outbox.inFlight.has(it.id)
            ? "sending"
            : "waiting",
      }));
      return items;
    }

    emitPending() {
      this.view.pending(this.pendingItems(), Array.from(this.sent));
    }

    emitPresence() {
      this.view.presence(this.presence.list(this.me, this.connected));
    }
  }

  // --- chat features: scroll-back, unread, typing, links, days ----------------------

  const OLDER_PAGE = 50;
  const TYPING_SEND_MS = 2000; // the server forwards at most one per 2 s anyway
  const TYPING_SHOW_MS = 4000; // an indicator outlives its last frame this long

  function olderUrl(threadId, beforeSeq, limit) {
    return (
      `/api/threads/${encodeURIComponent(threadId)}/messages` +
      `?before_seq=${beforeSeq}&limit=${limit}`
    );
  }

  /**
   * Older messages (a before_seq page) merged below a store's floor: returns the
   * ones to show above the current first, ascending, each once. Anything at or
   * above the floor is already shown (or will be, live) and is dropped.
   */
  function mergeOlder(store, messages) {
    const below = (messages || [])
      .filter((m) => m && Number.isInteger(m.seq) && m.seq >= 1 && m.seq <= store.floor)
      .sort((a, b) => a.seq - b.seq);
    const seen = new Set();
    const fresh = below.filter((m) => !seen.has(m.seq) && seen.add(m.seq));
    if (fresh.length) store.floor = fresh[0].seq - 1;
    return fresh;
  }

  /**
   * What arrived while the tab was hidden: the count for the title and the first
   * unread seq (where the "new messages" divider goes). Our own messages never
   * count.
   */
  class Unread {
    constructor(me) {
      this.me = me;
      this.hidden = false;
      this.count = 0;
      this.firstSeq = null;
    }

    setHidden(hidden) {
      this.hidden = Boolean(hidden);
    }

    /** Messages released for display; counted while hidden. */
    add(messages) {
      if (!this.hidden) return;
      for (const m of messages) {
        if (m.user === this.me) continue;
        this.count += 1;
        if (this.firstSeq === null || m.seq < this.firstSeq) this.firstSeq = m.seq;
      }
    }

    /** The tab is visible again: the first unread seq (or null); counts reset. */
    seen() {
      const first = this.firstSeq;
      this.hidden = false;
      this.count = 0;
      this.firstSeq = null;
      return first;
    }

    title(base) {
      return this.count > 0 ? `(${this.count}) ${base}` : base;
    }
  }

  /** Typing frames we send: at most one per TYPING_SEND_MS while the user types. */
  class TypingSender {
    constructor(interval) {
      this.interval = interval === undefined ? TYPING_SEND_MS : interval;
      this.lastAt = null;
    }

    /** Whether a keystroke at `now` should send a typing frame (and note it). */
    shouldSend(now) {
      if (this.lastAt !== null && now - this.lastAt < this.interval) return false;
      this.lastAt = now;
      return true;
    }

    /** A message was sent: the next keystroke may announce typing at once. */
    reset() {
      this.lastAt = null;
    }
  }

  /** Who else is typing: each name until TYPING_SHOW_MS after its last frame. */
  class TypingWatch {
    constructor(showMs) {
      this.showMs = showMs === undefined ? TYPING_SHOW_MS : showMs;
      this.until = new Map();
    }

    seen(user, now) {
      if (typeof user === "string" && user) this.until.set(user, now + this.showMs);
    }

    /** They sent their message: no longer typing. */
    stopped(user) {
      this.until.delete(user);
    }

    active(now) {
      for (const [user, until] of this.until) if (until <= now) this.until.delete(user);
      return Array.from(this.until.keys()).sort((a, b) => a.localeCompare(b));
    }

    /** The earliest moment a name expires (to schedule a refresh), or null. */
    nextExpiry() {
      let next = null;
      for (const until of this.until.values()) if (next === null || until < next) next = until;
      return next;
    }
  }

  function typingText(names) {
    if (!names.length) return "";
    if (names.length === 1) return `${names[0]} is typing…`;
    if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
    return "Several people are typing…";
  }

  const URL_RE = /\bhttps?:\/\/[^\s<>"'`]+/gi;
  const TRAILING_RE = /[.,;:!?)\]}]$/;

  /**
   * Text split into [{text}] and [{text, href}] parts; only absolute http(s) URLs
   * become links (never javascript:, data: or anything else), checked by URL().
   */
  function linkTokens(text) {
    const parts = [];
    const source = typeof text === "string" ? text : "";
    let at = 0;
    for (const match of source.matchAll(URL_RE)) {
      const raw = trimUrl(match[0]);
      const href = safeHref(raw);
      if (!href) continue;
      if (match.index > at) parts.push({ text: source.slice(at, match.index) });
      parts.push({ text: raw, href });
      at = match.index + raw.length;
    }
    if (at < source.length) parts.push({ text: source.slice(at) });
    return parts;
  }

  /** Trailing punctuation is the sentence's, but a ")" closing a "(" in the URL stays. */
  function trimUrl(raw) {
    let url = raw;
    while (TRAILING_RE.test(url.slice(-1))) {
      const last = url.slice(-1);
      if (last === ")" && url.split("(").length > url.split(")").length - 1) break;
      url = url.slice(0, -1);
    }
    return url;
  }

  function safeHref(raw) {
    try {
      const url = new URL(raw);
      if (url.protocol !== "http:" && url.protocol !== "https:") return null;
      return url.href;
    } catch (_err) {
      return null;
    }
  }

  /**
   * The newest seq this browser showed per thread (localStorage), for the unread
   * badges of the sidebar: a thread gets a badge once it has been opened here.
   */
  class ReadMarks {
    constructor(storage, key) {
      this.storage = storage;
      this.key = key;
    }

    all() {
      try {
        const parsed = JSON.parse(this.storage.getItem(this.key) || "{}");
        return parsed && typeof parsed === "object" && !Array.isArray(parsed) ? parsed : {};
      } catch (_err) {
        return {};
      }
    }

    get(threadId) {
      const seq = this.all()[threadId];
      return Number.isInteger(seq) ? seq : null;
    }

    /** Everything up to `seq` was shown in the thread. */
    see(threadId, seq) {
      if (!Number.isInteger(seq) || seq < 0 || this.get(threadId) === seq) return;
      const marks = this.all();
      marks[threadId] = seq;
      try {
        this.storage.setItem(this.key, JSON.stringify(marks));
      } catch (_err) {
        // Storage full or disabled: no badges, nothing else lost.
      }
    }

    /** Unread messages in a thread whose newest seq is `lastSeq` (0 if never opened). */
    unread(threadId, lastSeq) {
      const mark = this.get(threadId);
      if (mark === null || !Number.isInteger(lastSeq)) return 0;
      return Math.max(0, lastSeq - mark);
    }
  }

  /** The local calendar day of an ISO timestamp ("2026-11-30"), or null. */
  function dayKey(iso) {
    const d = new Date(iso);
    if (!iso || Number.isNaN(d.getTime())) return null;
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  }

  /** Indexes of messages (created_at, in display order) that start a new day. */
  function daySeparators(timestamps) {
    const at = [];
    let previous = null;
    timestamps.forEach((iso, index) => {
      const day = dayKey(iso);
      if (day !== null && day !== previous) at.push(index);
      if (day !== null) previous = day;
    });
    return at;
  }

  function dayLabel(iso, now) {
    const day = dayKey(iso);
    const today = dayKey(new Date(now).toISOString());
    const yesterday = dayKey(new Date(now - 86400000).toISOString());
    if (day === today) return "Today";
    if (day === yesterday) return "Yesterday";
    return new Date(iso).toLocaleDateString([], {
      weekday: "long",
      year: "numeric",
      month: "long",
      day: "numeric",
    });
  }

  // --- the browser page ---------------------------------------------------------------

  const STATUS_TEXT = {
    idle: "Starting…",
    connecting: "Connecting…",
    connected: "Connected",
    reconnecting: "Reconnecting…",
    offline: "Offline",
    stopped: "Disconnected",
    login: "Signed out",
  };
  const STATUS_SPOKEN = {
    connecting: "Connecting",
    connected: "Connected",
    reconnecting: "Connection lost, reconnecting",
    offline: "Offline: waiting for the network",
    stopped: "Disconnected",
    login: "Signed out",
  };

  /** Renders into the chat page; every piece of user text goes in as textContent. */
  class DomView {
    constructor(doc, me) {
      this.doc = doc;
      this.me = me;
      this.el = (id) => doc.getElementById(id);
      this.messages = this.el("messages");
      this.pendingList = this.el("pending");
      this.scroller = this.el("scroller");
      this.countdownTimer = null;
      this.noticeTimer = null;
      this.pendingEls = new Map();
    }

    nearBottom() {
      const s = this.scroller;
      return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
    }

    stick(wasNearBottom) {
      if (wasNearBottom) this.scroller.scrollTop = this.scroller.scrollHeight;
    }

    messageItem(m, extraClass) {
      const li = this.doc.createElement("li");
      li.className = `msg${m.user === this.me ? " mine" : ""}${extraClass ? ` ${extraClass}` : ""}`;
      const head = this.doc.createElement("div");
      head.className = "meta";
      const who = this.doc.createElement("span");
      who.className = "author";
      who.textContent = m.user || this.me;
      head.append(who);
      if (m.created_at) {
        const time = this.doc.createElement("time");
        time.dateTime = m.created_at;
        const d = new Date(m.created_at);
        time.textContent = Number.isNaN(d.getTime())
          ? ""
          : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
        time.title = d.toLocaleString();
        head.append(time);
      }
      const text = this.doc.createElement("p");
      text.className = "text";
      this.fillText(text, m.text);
      if (m.created_at) li.dataset.created = m.created_at;
      li.append(head, text);
      return li;
    }

    /** User text as text nodes, http(s) URLs as <a> (never innerHTML). */
    fillText(el, text) {
      for (const part of linkTokens(text)) {
        if (!part.href) {
          el.append(this.doc.createTextNode(part.text));
          continue;
        }
        const a = this.doc.createElement("a");
        a.href = part.href;
        a.textContent = part.text;
        a.rel = "noopener noreferrer";
        a.target = "_blank";
        el.append(a);
      }
    }

    release(messages) {
      const near = this.nearBottom();
      const frag = this.doc.createDocumentFragment();
      for (const m of messages) {
        const li = this.messageItem(m);
        li.dataset.seq = String(m.seq);
        li.dataset.id = m.id;
        frag.append(li);
      }
      this.messages.append(frag);
      this.el("empty").hidden = true;
      this.placeDays();
      this.stick(near);
    }

    /** The thread's history was replaced (an epoch reset): clear what is shown. */
    reset() {
      this.messages.replaceChildren();
      this.el("empty").hidden = false;
      // Scroll-back starts again from the reloaded page.
      this.el("older-button").hidden = false;
      this.el("older-status").textContent = "";
    }

    pending(items, sentIds) {
      const near = this.nearBottom();
      const wanted = new Map(items.map((it) => [it.id, it]));
      for (const id of sentIds) {
        if (!wanted.has(id) && this.pendingEls.has(id)) {
          wanted.set(id, { id, state: "sent", text: null });
        }
      }
      for (const [id, li] of this.pendingEls) {
        if (!wanted.has(id)) {
          li.remove();
          this.pendingEls.delete(id);
        }
      }
      const label = {
        queued: "Not sent yet: waiting for the connection",
        waiting: "Queued",
        sending: "Sending…",
        sent: "Sent",
      };
      for (const it of wanted.values()) {
        let li = this.pendingEls.get(it.id);
        if (!li) {
          li = this.messageItem({ user: this.me, text: it.text }, "pending");
          li.dataset.clientId = it.id;
          const note = this.doc.createElement("span");
          note.className = "pending-note";
          li.querySelector(".meta").append(note);
          this.pendingList.append(li);
          this.pendingEls.set(it.id, li);
        }
        li.dataset.state = it.state;
        li.querySelector(".pending-note").textContent = label[it.state];
      }
      this.stick(near);
    }

    presence(names) {
      const list = this.el("present");
      list.replaceChildren(
        ...names.map((name) => {
          const li = this.doc.createElement("li");
          li.textContent = name === this.me ? `${name} (you)` : name;
          return li;
        }),
      );
      this.el("present-count").textContent = `(${names.length})`;
      this.el("side-summary-count").textContent = `${names.length} present`;
    }

    /** Older messages above the first one, the reader's view kept where it was. */
    older(messages, done) {
      const status = this.el("older-status");
      const button = this.el("older-button");
      if (messages === null) {
        if (status) status.textContent = "Could not load older messages.";
        return;
      }
      if (messages.length) {
        const s = this.scroller;
        const before = s.scrollHeight - s.scrollTop;
        const frag = this.doc.createDocumentFragment();
        for (const m of messages) {
          const li = this.messageItem(m);
          li.dataset.seq = String(m.seq);
          li.dataset.id = m.id;
          frag.append(li);
        }
        this.messages.prepend(frag);
        this.el("empty").hidden = true;
        this.placeDays();
        s.scrollTop = s.scrollHeight - before;
      }
      if (button) button.hidden = Boolean(done);
      if (status) {
        const any = this.messages.querySelector("li.msg");
        status.textContent = done
          ? any
            ? "This is the beginning of the thread."
            : ""
          : messages.length
            ? `${messages.length} older messages loaded.`
            : "";
      }
    }

    /** A "new messages" line above the first message that arrived while away. */
    divider(seq) {
      for (const old of this.messages.querySelectorAll(".unread-divider")) old.remove();
      const first = this.messages.querySelector(`li.msg[data-seq="${Number(seq)}"]`);
      if (!first) return;
      const li = this.doc.createElement("li");
      li.className = "unread-divider";
      li.setAttribute("role", "separator");
      li.textContent = "New messages";
      first.before(li);
      if (!this.nearBottom()) return;
      li.scrollIntoView({ block: "start" });
    }

    unread(count) {
      const base = this.doc.body.dataset.title || this.doc.title;
      this.doc.body.dataset.title = base;
      this.doc.title = count > 0 ? `(${count}) ${base}` : base;
    }

    typing(text) {
      const el = this.el("typing");
      if (el && el.textContent !== text) el.textContent = text;
    }

    /** One separator line above the first message of every day. */
    placeDays() {
      for (const old of this.messages.querySelectorAll(".day-sep")) old.remove();
      const items = Array.from(this.messages.querySelectorAll("li.msg"));
      const now = Date.now();
      for (const index of daySeparators(items.map((li) => li.dataset.created))) {
        const li = this.doc.createElement("li");
        li.className = "day-sep";
        li.setAttribute("role", "separator");
        const time = this.doc.createElement("time");
        time.dateTime = dayKey(items[index].dataset.created);
        time.textContent = dayLabel(items[index].dataset.created, now);
        li.append(time);
        items[index].before(li);
      }
    }

    notice(text) {
      const el = this.el("notice");
      el.textContent = text;
      el.hidden = false;
      clearTimeout(this.noticeTimer);
      this.noticeTimer = setTimeout(() => {
        el.hidden = true;
      }, 6000);
    }

    fatal(message) {
      const el = this.el("alert");
      el.textContent = message;
      el.hidden = false;
      // Nothing typed here could be delivered: no invitation to say hello.
      this.el("empty").hidden = true;
      for (const c of this.el("composer-form").querySelectorAll("textarea, button")) {
        c.disabled = true;
      }
    }

    login() {
      const next = encodeURIComponent(location.pathname + location.search);
      location.assign(`${this.doc.body.dataset.loginUrl || "/login/"}?next=${next}`);
    }

    status(state, info) {
      const box = this.el("status");
      box.dataset.state = state;
      const label = this.el("status-text");
      clearInterval(this.countdownTimer);
      this.countdownTimer = null;
      if (state === "reconnecting" && info.retryAt) {
        const tick = () => {
          const secs = Math.ceil((info.retryAt - Date.now()) / 1000);
          label.textContent = secs > 0 ? `Reconnecting in ${secs} s` : "Reconnecting…";
        };
        tick();
        this.countdownTimer = setInterval(tick, 250);
      } else {
        label.textContent = STATUS_TEXT[state] || state;
      }
      const spoken = STATUS_SPOKEN[state];
      const live = this.el("status-live");
      if (spoken && live.textContent !== spoken) live.textContent = spoken;
      if (state === "stopped" && info.message) this.fatal(info.message);
      this.doc.body.classList.toggle("is-offline", state !== "connected");
      const now = this.el("reconnect-now");
      if (now) now.hidden = state !== "reconnecting" && state !== "offline";
    }
  }

  async function fetchJsonBrowser(url) {
    const response = await fetch(url, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (!response.ok) {
      const err = new Error(`HTTP ${response.status} for ${url}`);
      err.status = response.status;
      throw err;
    }
    return response.json();
  }

  function sessionStore() {
    try {
      const s = window.sessionStorage;
      const probe = "emergence.probe";
      s.setItem(probe, "1");
      s.removeItem(probe);
      return s;
    } catch (_err) {
      return new MemoryStorage();
    }
  }

  /** Scroll-back, unread, typing and "Reconnect now" on the chat page. */
  function wireFeatures(doc, client, conn, view) {
    const scroller = doc.getElementById("scroller");
    const input = doc.getElementById("composer");
    // Keep loading while the page does not fill the scroller (nothing to scroll).
    const fill = () => {
      client.loadOlder().then((older) => {
        const short = scroller.scrollHeight <= scroller.clientHeight;
        if (older.length && short && !client.olderDone) fill();
      });
    };
    scroller.addEventListener("scroll", () => {
      if (scroller.scrollTop < 150) fill();
    }, { passive: true });
    doc.getElementById("older-button").addEventListener("click", fill);
    if (client.store.floor <= 0) view.older([], true);
    else if (scroller.scrollHeight <= scroller.clientHeight) fill();
    input.addEventListener("input", () => {
      if (input.value.trim()) client.typed();
    });
    client.setHidden(doc.visibilityState === "hidden");
    doc.addEventListener("visibilitychange", () => {
      client.setHidden(doc.visibilityState === "hidden");
    });
    // Logging out revokes this socket (4401): leave quietly instead of racing the
    // form's own navigation with a redirect to the login page.
    const logout = doc.querySelector("form.logout");
    if (logout) logout.addEventListener("submit", () => conn.stop());
    doc.getElementById("reconnect-now").addEventListener("click", () => {
      const wait = conn.serverWaitUntil - Date.now();
      if (wait > 0) {
        view.notice(
          `The server asked us to wait: reconnecting in ${Math.ceil(wait / 1000)} s.`,
        );
      }
      conn.retryNow();
    });
  }

  const BADGE_POLL_MS = 30000;
  const BADGE_THREADS = 20; // threads polled for a badge, at most

  /**
   * Unread badges in the sidebar: the open thread marks what it showed; every other
   * listed thread opened before in this browser is polled for its last_seq.
   */
  function wireBadges(doc, client, me) {
    let storage;
    try {
      storage = window.localStorage;
    } catch (_err) {
      return;
    }
    const marks = new ReadMarks(storage, `emergence.read.${me}`);
    const mark = () => {
      if (doc.visibilityState !== "hidden") marks.see(client.threadId, client.store.lastSeq);
    };
    const view = client.view;
    const release = view.release.bind(view);
    view.release = (messages) => {
      release(messages);
      mark();
    };
    doc.addEventListener("visibilitychange", mark);
    mark();
    const links = Array.from(doc.querySelectorAll(".thread-list a[data-thread]"))
      .filter((a) => a.dataset.thread !== client.threadId && marks.get(a.dataset.thread) !== null)
      .slice(0, BADGE_THREADS);
    const poll = () => {
      for (const a of links) {
        const id = a.dataset.thread;
        fetchJsonBrowser(`/api/threads/${encodeURIComponent(id)}/messages?limit=1`).then(
          (body) => showBadge(doc, a, marks.unread(id, body.last_seq)),
          () => {}, // a thread we lost access to, or the server away: no badge
        );
      }
    };
    if (links.length) {
      poll();
      setInterval(poll, BADGE_POLL_MS);
    }
  }

  function showBadge(doc, link, count) {
    let badge = link.querySelector(".badge");
    if (!count) {
      if (badge) badge.remove();
      return;
    }
    if (!badge) {
      badge = doc.createElement("span");
      badge.className = "badge";
      link.append(badge);
    }
    badge.textContent = count > 99 ? "99+" : String(count);
    badge.setAttribute("aria-label", `${count} unread`);
  }

  /** Explain a refused POST /api/threads to a person. */
  function threadCreateError(status, body) {
    if (status === 409) return "A thread with this name exists already. Pick another.";
    if (status === 400) return (body && body.error) || "Check the name and members.";
    if (status === 401 || status === 403) return "Your login has expired: reload.";
    return "The thread could not be created; try again.";
  }

  /** The sidebar's "New private thread" form: POST /api/threads, then open it. */
  function wirePrivateForm(doc) {
    const form = doc.getElementById("private-form");
    if (!form) return;
    const error = doc.getElementById("private-error");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const idInput = doc.getElementById("private-id");
      const id = idInput.value.trim();
      const names = doc.getElementById("private-members").value;
      const members = names.split(/[\s,]+/).filter(Boolean);
      const csrf = doc.querySelector("input[name=csrfmiddlewaretoken]");
      error.textContent = "";
      let response;
      try {
        response = await fetch("/api/threads", {
          method: "POST",
          credentials: "same-origin",
          headers: {
            "Content-Type": "application/json",
            Accept: "application/json",
            "X-CSRFToken": csrf ? csrf.value : "",
          },
          body: JSON.stringify({ id, private: true, members }),
        });
      } catch (_err) {
        error.textContent = "The server cannot be reached; try again.";
        return;
      }
      if (response.status === 201) {
        location.assign(`?thread=${encodeURIComponent(id)}`);
        return;
      }
      const body = await response.json().catch(() => null);
      error.textContent = threadCreateError(response.status, body);
      idInput.focus();
    });
  }

  /** Start the chat page (body[data-page=chat]); returns the ChatClient. */
  function boot(doc) {
    const body = doc.body;
    const me = body.dataset.user;
    const threadId = body.dataset.thread;
    const storage = sessionStore();
    // Per user: after a logout and another login in this tab the old id would be
    // another user's session (4403).
    const sessionKey = `emergence.session.${me}`;
    let sessionId = storage.getItem(sessionKey);
    if (!sessionId || !/^[A-Za-z0-9_-]{1,64}$/.test(sessionId)) {
      sessionId = uuid4();
      storage.setItem(sessionKey, sessionId);
    }
    const historyEl = doc.getElementById("history");
    let history = [];
    try {
      history = historyEl ? JSON.parse(historyEl.textContent) : [];
    } catch (_err) {
      history = [];
    }

    const view = new DomView(doc, me);
    const store = new MessageStore(0);
    const outbox = new Outbox(storage, `emergence.outbox.${me}.${threadId}`);
    const client = new ChatClient({
      me,
      threadId,
      store,
      outbox,
      fetchJson: fetchJsonBrowser,
      view,
    });
    const conn = new Connection({
      url: () => wsUrl(location, sessionId, threadId, client.store.lastSeq, client.epoch),
      WebSocket: window.WebSocket,
      isOnline: () => navigator.onLine !== false,
      onState: (state, info) => {
        if (state !== "connected" && state !== "connecting") client.socketClosed();
        view.status(state, info);
        client.stateLog.push(state);
      },
      onOpen: () => client.socketOpening(),
      onFrame: (frame) => client.onFrame(frame),
      onLogin: () => view.login(),
    });
    client.conn = conn;
    client.sessionId = sessionId;
    client.stateLog = [];
    client.seed(history);

    const form = doc.getElementById("composer-form");
    const input = doc.getElementById("composer");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (client.submit(input.value)) input.value = "";
      input.focus();
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    window.addEventListener("online", () => conn.retryNow());
    window.addEventListener("offline", () => conn.wentOffline());
    doc.addEventListener("visibilitychange", () => {
      if (doc.visibilityState === "visible") conn.retryNow();
    });
    window.addEventListener("pagehide", () => conn.stop());
    window.addEventListener("pageshow", (event) => {
      if (event.persisted) location.reload(); // back from the bfcache: start afresh
    });

    const side = doc.getElementById("side-details");
    if (side && window.matchMedia && !window.matchMedia("(min-width: 48rem)").matches) {
      side.open = false;
    }
    wireFeatures(doc, client, conn, view);
    wirePrivateForm(doc);
    wireBadges(doc, client, me);
    conn.start();
    return client;
  }

  return {
    BACKOFF_BASE_MS,
    BACKOFF_CAP_MS,
    STABLE_MS,
    RESTART_SPREAD_MS,
    PING_INTERVAL_MS,
    PONG_TIMEOUT_MS,
    CONNECT_TIMEOUT_MS,
    MAX_IN_FLIGHT,
    HISTORY_PAGE,
    MAX_TEXT,
    backoffDelay,
    overloadDelay,
    closeAction,
    threadCreateError,
    uuid4,
    wsUrl,
    historyUrl,
    latestUrl,
    isEpoch,
    storableText,
    olderUrl,
    mergeOlder,
    Unread,
    TypingSender,
    TypingWatch,
    typingText,
    linkTokens,
    dayKey,
    daySeparators,
    dayLabel,
    ReadMarks,
    MessageStore,
    MemoryStorage,
    Outbox,
    Presence,
    fetchMissing,
    Connection,
    ChatClient,
    DomView,
    boot,
  };
})();

if (typeof module !== "undefined" && module.exports) {
  module.exports = Emergence;
} else if (typeof document !== "undefined" && document.body && document.body.dataset.page === "chat") {
  window.emergenceChat = Emergence.boot(document);
}
