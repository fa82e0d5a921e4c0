// The CTI websocket client shared by the agent bar and the wallboard (docs/cti-protocol.md).
//
// Commands get increasing numeric ids and return Promises settled by the matching `result` or
// `error`. Events go to listeners registered with on(type, fn); '*' receives every event.
// The token lives in sessionStorage so a reload or a reconnect sends `resume` and the server
// replays the current state. Client-side happenings are emitted as pseudo-events:
//   'conn'          {state: 'open'|'connecting'|'closed'}
//   'session'       the login/resume result (emitted before any event that follows it)
//   'auth_required' {code}: no token, or the server refused it; show the login form
//   'protocol_error' an `error` whose id is null or unknown

export class CtiError extends Error {
  constructor(code, message) {
    super(message || code);
    this.name = 'CtiError';
    this.code = code;
  }
}

const AUTH_LOST = new Set(['token_expired', 'invalid_token']);
const MAX_BACKOFF_MS = 5000;
const FIRST_BACKOFF_MS = 250;

function defaultUrl() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${location.host}/cti`;
}

export class CtiClient {
  #url;
  #storageKey;
  #ws = null;
  #nextId = 1;
  #pending = new Map();
  #listeners = new Map();
  #attempt = 0;
  #timer = null;
  #state = 'closed';
  /** The last login/resume result ({user, role, token, expires_in_s}), null when logged out. */
  session = null;

  constructor({ url = defaultUrl(), storageKey = 'verde.cti.token' } = {}) {
    this.#url = url;
    this.#storageKey = storageKey;
    // A network that comes back should not wait out the backoff.
    window.addEventListener('online', () => {
      if (!this.#ws) this.#connect();
    });
  }

  get state() {
    return this.#state;
  }

  get token() {
    try {
      return sessionStorage.getItem(this.#storageKey);
    } catch {
      return null;
    }
  }

  #setToken(token) {
    try {
      if (token) sessionStorage.setItem(this.#storageKey, token);
      else sessionStorage.removeItem(this.#storageKey);
    } catch {
      // Without storage a reload needs a new login; the open connection still works.
    }
  }

  on(type, fn) {
    if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
    this.#listeners.get(type).add(fn);
    return () => this.#listeners.get(type)?.delete(fn);
  }

  #emit(type, data) {
    for (const fn of this.#listeners.get(type) ?? []) {
      try {
        fn(data);
      } catch (e) {
        console.error(`cti: listener for ${type} failed`, e);
      }
    }
  }

  #setState(state) {
    if (state === this.#state) return;
    this.#state = state;
    this.#emit('conn', { state });
  }

  /** Opens the connection; it then reconnects by itself until the page goes away. */
  start() {
    if (!this.#ws) this.#connect();
  }

  #connect() {
    clearTimeout(this.#timer);
    this.#timer = null;
    this.#setState('connecting');
    let ws;
    try {
      ws = new WebSocket(this.#url);
    } catch (e) {
      console.error('cti: cannot open websocket', e);
      this.#setState('closed');
      this.#scheduleReconnect();
      return;
    }
    this.#ws = ws;
    ws.onopen = () => {
      if (ws !== this.#ws) return;
      this.#setState('open');
      this.#authenticate();
    };
    ws.onmessage = (ev) => {
      if (ws !== this.#ws) return;
      this.#onMessage(ev.data);
    };
    ws.onclose = () => {
      if (ws !== this.#ws) return;
      this.#ws = null;
      this.#dropConnection();
      this.#scheduleReconnect();
    };
    // 'close' always follows 'error'; reconnecting happens there.
    ws.onerror = () => {};
  }

  #dropConnection() {
    this.session = null;
    const err = new CtiError('disconnected', 'connection closed');
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
    this.#setState('closed');
  }

  #scheduleReconnect() {
    if (this.#timer) return;
    const base = Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** this.#attempt);
    // Jitter keeps a room of bars from reconnecting in lockstep after a restart.
    const delay = Math.min(MAX_BACKOFF_MS, Math.round(base * (0.75 + Math.random() * 0.5)));
    this.#attempt += 1;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#connect();
    }, delay);
  }

  #authenticate() {
    const token = this.token;
    if (!token) {
      this.#attempt = 0;
      this.#emit('auth_required', { code: null });
      return;
    }
    this.#send('resume', { token }, true).catch((e) => {
      if (e.code === 'disconnected') return; // onclose reconnects
      if (AUTH_LOST.has(e.code) || e.code === 'auth_failed') {
        this.#setToken(null);
        this.#attempt = 0;
        this.#emit('auth_required', { code: e.code });
        return;
      }
      // The server could not take us now (unavailable, rate_limited, internal): retry later
      // with backoff rather than dropping the user's session.
      this.#ws?.close();
    });
  }

  #onMessage(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      console.warn('cti: ignoring a message that is not JSON');
      return;
    }
    if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') return;
    if (msg.type === 'result' || msg.type === 'error') {
      const p = msg.id == null ? undefined : this.#pending.get(msg.id);
      if (!p) {
        if (msg.type === 'error') this.#emit('protocol_error', msg);
        return;
      }
      this.#pending.delete(msg.id);
      if (msg.type === 'result') {
        if (p.auth) {
          this.#setToken(msg.token);
          this.#attempt = 0;
          this.session = { user: msg.user, role: msg.role, token: msg.token, expires_in_s: msg.expires_in_s };
          // Synchronously, so the page resets its view before the replayed events arrive.
          this.#emit('session', { ...msg, resumed: p.type === 'resume' });
        }
        p.resolve(msg);
      } else {
        if (AUTH_LOST.has(msg.code)) {
          this.#setToken(null);
          this.session = null;
          this.#emit('auth_required', { code: msg.code });
        }
        p.reject(new CtiError(msg.code, msg.message));
      }
      return;
    }
    this.#emit(msg.type, msg);
    this.#emit('*', msg);
  }

  #send(type, fields, auth = false) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new CtiError('disconnected', 'not connected'));
    }
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, auth, type });
      try {
        ws.send(JSON.stringify({ ...fields, v: 1, type, id }));
      } catch (e) {
        this.#pending.delete(id);
        reject(new CtiError('disconnected', String(e)));
      }
    });
  }

  /** Sends a command; resolves with the result message, rejects with a CtiError. */
  command(type, fields = {}) {
    return this.#send(type, fields);
  }

  /** Logs in with a password; the token is kept for resume. */
  login(user, password) {
    return this.#send('login', { user, password }, true);
  }

  /**
   * Forgets the session and starts a fresh connection, so the next login does not meet a
   * connection the server still counts as logged in.
   */
  logoutLocal() {
    this.#setToken(null);
    this.session = null;
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      try {
        ws.close(1000, 'logout');
      } catch {
        // Already closing.
      }
    }
    this.#dropConnection();
    this.#attempt = 0;
    this.#connect();
  }
}
