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
 * that accepts and drops at once still sees the delay grow.
 */
"use strict";

const Emergence = (function () {
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_CAP_MS = 30000;
  const STABLE_MS = 10000;
  const PING_INTERVAL_MS = 20000;
  const PONG_TIMEOUT_MS = 10000;
  const CONNECT_TIMEOUT_MS = 15000;
  const MAX_IN_FLIGHT = 10;
  const HISTORY_PAGE = 500;
  const MAX_TEXT = 4000;
  const CLIENT_CLOSE = 4000; // our own code when we give a socket up (timeouts)
  const WS_OPEN = 1;

  // --- backoff and close codes ---------------------------------------------------

  /** Full-jitter exponential backoff: random(0, min(cap, base * 2^attempt)) ms. */
  function backoffDelay(attempt, random, base, cap) {
    const rnd = random || Math.random;
    const b = base === undefined ? BACKOFF_BASE_MS : base;
    const c = cap === undefined ? BACKOFF_CAP_MS : cap;
    const exp = Math.min(Math.max(0, Math.floor(attempt) || 0), 30);
    return Math.floor(rnd() * Math.min(c, b * 2 ** exp));
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

  /** ws[s]://host/ws/<session>/?thread_id=<thread>&last_seq=<n> for a location. */
  function wsUrl(loc, sessionId, threadId, lastSeq) {
    const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
    return (
      `${scheme}//${loc.host}/ws/${encodeURIComponent(sessionId)}/` +
      `?thread_id=${encodeURIComponent(threadId)}&last_seq=${lastSeq}`
    );
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
      this.scheduleRetry();
    }

    scheduleRetry() {
      this.clearRetry();
      if (!this.isOnline()) {
        this.setState("offline");
        return;
      }
      const delay = backoffDelay(this.attempt, this.random);
      this.attempt += 1;
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
      if (this.state === "reconnecting" || this.state === "offline") this.connect();
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
        default:
          return undefined;
      }
    }

    onHello(hello) {
      this.connected = true;
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
      if (this.resuming || this.fetching || !this.connected) return;
      if (this.conn.send({ type: "resume", last_seq: this.store.lastSeq })) {
        this.resuming = true;
      }
    }

    onResumed(frame) {
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
      if (this.fetching) return;
      this.fetching = true;
      fetchMissing({
        fetchJson: this.fetchJson,
        threadId: this.threadId,
        store: this.store,
        onRelease: (messages) => this.released(messages),
      })
        .then(
          () => {
            this.fetching = false;
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

    onError(frame) {
      this.log(`server error frame: ${frame.code} ${frame.detail || ""}`);
      if (frame.code === "rate_limited") {
        // Which frame was refused is not said: resend what is unacknowledged.
        this.outbox.resetInFlight();
        this.timers.setTimeout(() => this.flush(), 1000);
        this.view.notice("Sending too fast; retrying in a moment.");
      } else if (frame.code === "db_unavailable") {
        this.view.notice("The server's database is unavailable; reconnecting.");
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
      text.textContent = m.text;
      li.append(head, text);
      return li;
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
      this.stick(near);
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
      url: () => wsUrl(location, sessionId, threadId, store.lastSeq),
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
    conn.start();
    return client;
  }

  return {
    BACKOFF_BASE_MS,
    BACKOFF_CAP_MS,
    STABLE_MS,
    PING_INTERVAL_MS,
    PONG_TIMEOUT_MS,
    CONNECT_TIMEOUT_MS,
    MAX_IN_FLIGHT,
    HISTORY_PAGE,
    MAX_TEXT,
    backoffDelay,
    closeAction,
    uuid4,
    wsUrl,
    historyUrl,
    storableText,
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
