// One conversation's WebSocket (docs/websocket.md): a fresh single-use
// ws-token per connection, replay with `after=<last seq>`, commands with
// ack/error replies, and reconnection.
//
// Reconnection rules:
// - close 1008 `token_expired`: refresh the access token, mint a new
//   ws-token and reconnect at once (no backoff);
// - close 1008 `revoked` (the session was ended: logout elsewhere, account
//   disabled): the same refresh, which then fails, so the app signs out at once;
// - any other unexpected close or error: exponential backoff 1, 2, 4 … 30 s,
//   each jittered down by up to half, reset after a connection that lived a minute;
// - the session ends (refresh refused): stop, state `offline`;
// - the browser goes offline: state `offline`, reconnect when it is back;
// - close(): the page was left; nothing reconnects.

import * as api from './api.js';

const BACKOFF_BASE_MS = 1000;
const BACKOFF_MAX_MS = 30_000;
/** A connection that lived this long resets the backoff. */
const STABLE_MS = 60_000;
/** Client heartbeat: a `ping` command this often… */
const HEARTBEAT_MS = 25_000;
/** …that must be acknowledged within this, or the socket is presumed dead. */
const HEARTBEAT_TIMEOUT_MS = 10_000;
/** A command with no reply within this is reported as failed. */
const COMMAND_TIMEOUT_MS = 15_000;
/** Immediate token_expired reconnects allowed in a row before falling back to backoff (clock skew guard). */
const MAX_QUICK_EXPIRED = 3;

/** `ws:`/`wss:` origin of the page (connect-src 'self' allows it). */
function wsBase() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}`;
}

export class ConversationStream {
  /**
   * @param {string} conversationId
   * @param {{onEvent:(e:object)=>void, onState:(s:'live'|'reconnecting'|'offline')=>void, onFatal?:(message:string)=>void}} handlers
   */
  constructor(conversationId, { onEvent, onState, onFatal }) {
    this.conversationId = conversationId;
    /** The seq of the last event delivered; older or equal ones are ignored. */
    this.lastSeq = 0;
    this.onEvent = onEvent;
    this.onStateChange = onState;
    this.onFatal = onFatal || (() => {});
    this.state = null;

    this.ws = null;
    this.ready = false; // `ready` received on the current socket
    this.openedAt = 0;
    this.stopped = false;
    this.attempt = 0; // consecutive failed attempts, for the backoff
    this.quickExpired = 0;
    this.retryTimer = null;
    this.heartbeatTimer = null;
    this.generation = 0; // bumped by each connect; stale async work checks it
    this.nextId = 1;
    this.pending = new Map(); // command id → {resolve, reject, timer}

    this.handleOnline = () => {
      if (this.stopped) return;
      this.attempt = 0;
      this.connect();
    };
    this.handleOffline = () => {
      if (this.stopped) return;
      this.generation += 1; // a token being minted is no longer wanted
      this.clearRetry();
      this.dropSocket('offline');
      this.setState('offline');
    };
  }

  start() {
    window.addEventListener('online', this.handleOnline);
    window.addEventListener('offline', this.handleOffline);
    this.connect();
  }

  /** Closes the socket for good (leaving the page, signing out). */
  close() {
    if (this.stopped) return;
    this.stopped = true;
    this.generation += 1;
    window.removeEventListener('online', this.handleOnline);
    window.removeEventListener('offline', this.handleOffline);
    this.clearRetry();
    this.dropSocket('closed');
    this.setState('offline');
  }

  /** Whether commands can be sent now. */
  isLive() {
    return !!this.ws && this.ready && this.ws.readyState === WebSocket.OPEN;
  }

  /** Asks the server to cancel a run; resolves on `ack`, rejects with the server's error. */
  cancel(runId) {
    return this.command({ type: 'cancel', run_id: runId });
  }

  /** Answers a question; resolves on `ack`, rejects with the server's error. */
  answer(inputId, value) {
    return this.command({ type: 'input', input_id: inputId, value });
  }

  // ---- internals ----

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.onStateChange(state);
  }

  clearRetry() {
    if (this.retryTimer !== null) {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
    }
  }

  /** Stops for good because the session is over or the conversation is gone. */
  giveUp(message) {
    this.close();
    if (message) this.onFatal(message);
  }

  async connect() {
    if (this.stopped) return;
    this.clearRetry();
    this.dropSocket('reconnecting');
    if (!navigator.onLine) {
      this.setState('offline'); // the `online` event reconnects
      return;
    }
    if (this.state !== 'live') this.setState('reconnecting');
    const generation = ++this.generation;

    let token;
    try {
      token = (await api.mintWsToken(this.conversationId)).token;
    } catch (error) {
      if (this.stopped || generation !== this.generation) return;
      if (api.isSessionEnded(error)) {
        this.giveUp(); // the app shows the signed-out state
      } else if (error.status === 404 || error.status === 403) {
        this.giveUp(error.message);
      } else {
        this.scheduleRetry();
      }
      return;
    }
    if (this.stopped || generation !== this.generation) return;

    const url =
      `${wsBase()}/v1/conversations/${encodeURIComponent(this.conversationId)}/stream` +
      `?token=${encodeURIComponent(token)}&after=${this.lastSeq}`;
    let ws;
    try {
      ws = new WebSocket(url);
    } catch {
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    this.ready = false;
    this.openedAt = 0;
    ws.onopen = () => {
      if (this.ws === ws) this.openedAt = Date.now();
    };
    ws.onmessage = (message) => {
      if (this.ws === ws) this.receive(message.data);
    };
    ws.onerror = () => {
      // A `close` event always follows; it decides what to do.
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.afterClose(event.code, event.reason);
    };
  }

  /** Forgets the current socket without triggering a reconnect. */
  dropSocket(why) {
    this.stopHeartbeat();
    const ws = this.ws;
    this.ws = null;
    this.ready = false;
    this.rejectPending(why === 'closed' ? 'The connection was closed.' : 'The connection was lost.');
    if (ws) {
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      try {
        ws.close(1000);
      } catch {
        // already closing
      }
    }
  }

  async afterClose(code, reason) {
    const lived = this.openedAt ? Date.now() - this.openedAt : 0;
    this.stopHeartbeat();
    this.ready = false;
    this.rejectPending('The connection was lost.');
    if (this.stopped) return;
    if (lived >= STABLE_MS) this.attempt = 0;
    if (lived >= 5000) this.quickExpired = 0;
    if (!navigator.onLine) {
      this.setState('offline');
      return;
    }
    this.setState('reconnecting');

    const sessionClose = reason === 'token_expired' || reason === 'revoked';
    if (code === 1008 && sessionClose && this.quickExpired < MAX_QUICK_EXPIRED) {
      // The access token that minted the ws-token expired: refresh it and
      // reconnect right away with after=lastSeq.
      this.quickExpired += 1;
      const generation = this.generation;
      try {
        await api.refreshSession();
      } catch (error) {
        if (this.stopped || generation !== this.generation) return;
        if (api.isSessionEnded(error)) this.giveUp();
        else this.scheduleRetry();
        return;
      }
      if (this.stopped || generation !== this.generation) return;
      this.connect();
      return;
    }
    this.scheduleRetry();
  }

  scheduleRetry() {
    if (this.stopped) return;
    this.clearRetry();
    this.setState('reconnecting');
    const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(this.attempt, 15));
    this.attempt += 1;
    const delay = cap / 2 + Math.random() * (cap / 2); // "equal jitter": 0.5–1 s, 1–2 s, … 15–30 s
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect();
    }, delay);
  }

  receive(raw) {
    let message;
    try {
      message = JSON.parse(raw);
    } catch {
      return;
    }
    if (!message || typeof message !== 'object') return;
    switch (message.type) {
      case 'ready':
        this.ready = true;
        this.startHeartbeat();
        this.setState('live');
        break;
      case 'event':
        if (typeof message.seq !== 'number' || message.seq <= this.lastSeq) return; // replay overlap
        this.lastSeq = message.seq;
        this.quickExpired = 0;
        try {
          this.onEvent(message);
        } catch (error) {
          console.error('event handler failed', error);
        }
        break;
      case 'ack':
        this.settle(message.id, null);
        break;
      case 'error': {
        const error = new Error(message.message || 'The command failed.');
        error.code = message.code;
        this.settle(message.id, error);
        break;
      }
      default:
        break;
    }
  }

  command(body) {
    if (!this.isLive()) {
      const error = new Error('Not connected.');
      error.code = 'not_connected';
      return Promise.reject(error);
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        const error = new Error('The server did not answer in time.');
        error.code = 'timeout';
        reject(error);
      }, COMMAND_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ ...body, id }));
    });
  }

  settle(id, error) {
    const entry = this.pending.get(id);
    if (!entry) return;
    this.pending.delete(id);
    clearTimeout(entry.timer);
    if (error) entry.reject(error);
    else entry.resolve();
  }

  rejectPending(message) {
    for (const [id, entry] of this.pending) {
      clearTimeout(entry.timer);
      const error = new Error(message);
      error.code = 'connection_lost';
      entry.reject(error);
      this.pending.delete(id);
    }
  }

  // The server pings at the protocol level, but a browser only notices a
  // silently dead connection much later; an application-level ping does.
  startHeartbeat() {
    this.stopHeartbeat();
    const ws = this.ws;
    this.heartbeatTimer = setInterval(() => {
      if (this.ws !== ws || !this.isLive()) return;
      const deadline = setTimeout(() => {
        if (this.ws !== ws) return;
        // No answer: abandon this socket and reconnect.
        this.dropSocket('reconnecting');
        this.afterClose(4000, 'heartbeat_timeout');
      }, HEARTBEAT_TIMEOUT_MS);
      this.command({ type: 'ping' })
        .then(() => clearTimeout(deadline))
        .catch(() => {
          // The timeout above or the close handler takes care of it.
        });
    }, HEARTBEAT_MS);
  }

  stopHeartbeat() {
    if (this.heartbeatTimer !== null) {
      clearInterval(this.heartbeatTimer);
      this.heartbeatTimer = null;
    }
  }
}
