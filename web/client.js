// The liveshop client-room protocol (docs/protocol.md), shared by the viewer page and the host
// dashboard. A RoomClient connects over WebSocket (on a host without WebSockets, such as Spin,
// over server-sent events, sending commands as `POST /commands`), keeps the last (epoch, seq) it
// saw, reconnects with backoff and resumes, matches acks and errors to the commands that caused
// them, and hands every other frame to listeners by its `type`. A FeedClient reads the room's public feed over
// plain HTTP (cacheable by a CDN) for a viewer who has not said who they are, and hands out the
// same frames: a page listens to either the same way.
//
//   const room = new RoomClient({ show, token });
//   room.on('welcome', (w) => { if (!w.resumed) rebuild(w.state); });
//   room.on('chat.message', (e) => addMessage(e.message));
//   room.on('status', (s) => showConnection(s));   // connecting | open | reconnecting | banned | failed
//   room.on('notice', (err) => showError(err));    // error frames that answer no command of ours
//   await room.send('chat.send', { text: 'hi' });  // resolves with the ack, rejects with the error
//   room.signal('react', { emoji: '🔥' });          // signals are never acknowledged
//   room.connect();

/** Close code the room uses for a banned user. */
export const CLOSE_BANNED = 4003;

/** A frame's JSON, or null (said on the console) when it is not JSON. */
function readFrame(data) {
  try {
    return JSON.parse(data);
  } catch {
    console.warn('liveshop: unreadable frame', data);
    return null;
  }
}

/** Frames that reflect the latest state and are not replayed on resume. */
const LATEST_STATE = new Set(['reactions', 'poll.tally', 'presence']);

/** A refused command, with the room's stable error code. */
export class RoomError extends Error {
  constructor(frame) {
    super(frame.message || frame.code);
    this.code = frame.code;
    this.retryAfterMs = frame.retry_after_ms;
    this.frame = frame;
  }
}

/** The JWT's claims (not verified: only to read `exp`, `sub` and `role` for display). */
export function tokenClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = decodeURIComponent(
      [...atob(part)].map((c) => '%' + c.charCodeAt(0).toString(16).padStart(2, '0')).join(''),
    );
    return JSON.parse(json);
  } catch {
    return null;
  }
}

/** True when the token has an `exp` in the past (with a little slack for clock skew). */
export function tokenExpired(token, now = Date.now()) {
  const claims = tokenClaims(token);
  return !!claims && typeof claims.exp === 'number' && claims.exp * 1000 < now - 30_000;
}

let idCounter = 0;
function commandId() {
  idCounter += 1;
  return `c${idCounter}-${Math.random().toString(36).slice(2, 8)}`;
}

/** Listeners by frame type, and the room's clock: what both clients share. */
class Frames {
  constructor() {
    this._listeners = new Map();
    /** Server clock minus ours. */
    this.clockOffset = 0;
    this.status = 'idle';
  }

  /** Listen to a frame type (`chat.message`, `welcome`, ...), or `status`, `notice`, `frame`. */
  on(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
    return () => this._listeners.get(type).delete(fn);
  }

  _emit(type, value) {
    for (const fn of this._listeners.get(type) || []) {
      try {
        fn(value);
      } catch (e) {
        console.error(`liveshop: a ${type} listener failed`, e);
      }
    }
  }

  /** The room's clock now, as well as we can tell. */
  now() {
    return Date.now() + this.clockOffset;
  }

  _setStatus(status, detail) {
    this.status = status;
    this._emit('status', { status, detail });
  }
}

export class RoomClient extends Frames {
  /**
   * @param {{show: string, token: string, origin?: string, commandTimeoutMs?: number}} opts
   */
  constructor({ show, token, origin = location.origin, commandTimeoutMs = 15_000 }) {
    super();
    this.show = show;
    this.token = token;
    this.origin = origin;
    this.commandTimeoutMs = commandTimeoutMs;
    /** Where the log stands for us: sent back on reconnect to resume. */
    this.epoch = null;
    this.seq = null;
    /** Our `you` from the last welcome. */
    this.you = null;
    this._pending = new Map();
    this._ws = null;
    /** A host without WebSockets (Spin) says so; then the room comes over server-sent events
     * and commands go as `POST /commands`. */
    this._transport = 'ws';
    this._es = null;
    this._attempt = 0;
    this._timer = null;
    this._stopped = false;
    this._welcomed = false;
    this._failedOpens = 0;
    this._onOnline = () => this._reconnectSoon(0);
  }

  connect() {
    this._stopped = false;
    window.addEventListener('online', this._onOnline);
    this._open();
  }

  /** Closes for good (no reconnect). */
  close() {
    this._stopped = true;
    clearTimeout(this._timer);
    window.removeEventListener('online', this._onOnline);
    if (this._ws) this._ws.close(1000, 'bye');
    if (this._es) this._es.close();
    this._es = null;
    this._setStatus('closed');
  }

  url() {
    const base = `${this.origin.replace(/^http/, 'ws')}/v1/rooms/${encodeURIComponent(this.show)}/ws`;
    let url = `${base}?token=${encodeURIComponent(this.token)}`;
    if (this.epoch !== null && this.seq !== null) url += `&epoch=${this.epoch}&seq=${this.seq}`;
    return url;
  }

  _open() {
    clearTimeout(this._timer);
    if (this._stopped) return;
    if (tokenExpired(this.token)) {
      this._stopped = true;
      this._setStatus('failed', { code: 'token_expired', message: 'your token has expired' });
      return;
    }
    this._welcomed = false;
    this._setStatus(this._attempt === 0 ? 'connecting' : 'reconnecting');
    if (this._transport === 'sse') return this._openEvents();
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch (e) {
      this._setStatus('failed', { code: 'bad_url', message: String(e) });
      return;
    }
    this._ws = ws;
    ws.onopen = () => { this._failedOpens = 0; };
    ws.onmessage = (m) => {
      const frame = this._ws === ws && readFrame(m.data);
      if (frame) this._frame(frame);
    };
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      this._ws = null;
      // A socket that never opened was refused (a bad token is refused with HTTP 401 before the
      // upgrade, which a browser cannot see) or could not reach the host.
      if (!this._welcomed && ev.code === 1006) {
        this._failedOpens += 1;
        this._probeSockets();
      }
      this._failPending({ code: 'disconnected', message: 'the connection dropped; try again' });
      if (ev.code === CLOSE_BANNED) {
        this._stopped = true;
        this._setStatus('banned', { code: 'banned', message: ev.reason || 'you are banned from this room' });
        return;
      }
      // A host that refuses the token after the upgrade may say why in the close reason.
      if (/^token_/.test(ev.reason || '')) {
        this._stopped = true;
        this._setStatus('failed', { code: ev.reason, message: 'the room refused your token' });
        return;
      }
      this._reconnectSoon();
    };
  }

  /** After a socket that never opened: a host without WebSockets answers `501 not_supported`
   * to the socket's address, and the room is then followed over server-sent events. */
  _probeSockets() {
    if (this._transport !== 'ws' || this._probing) return;
    // With the token, so a host with sockets answers `426` and counts no refused token.
    const url = `${this.origin}/v1/rooms/${encodeURIComponent(this.show)}/ws?token=${encodeURIComponent(this.token)}`;
    this._probing = fetch(url)
      .then((res) => {
        if (res.status !== 501 || this._transport !== 'ws') return;
        this._transport = 'sse';
        if (!this._stopped && !this._ws) this._reconnectSoon(0);
      })
      .catch(() => {})
      .finally(() => { this._probing = null; });
  }

  _openEvents() {
    const params = new URLSearchParams({ token: this.token });
    if (this.epoch !== null && this.seq !== null) {
      params.set('epoch', this.epoch);
      params.set('seq', this.seq);
    }
    const es = new EventSource(`${this.origin}/v1/rooms/${encodeURIComponent(this.show)}/events?${params}`);
    this._es = es;
    es.onopen = () => { this._failedOpens = 0; };
    es.onmessage = (m) => {
      const frame = this._es === es && readFrame(m.data);
      if (!frame) return;
      // Without close codes, a banned reader is told so in a frame and the stream ends.
      if (frame.type === 'error' && !frame.id && frame.code === 'banned') {
        return this._ended({ code: CLOSE_BANNED, reason: frame.message });
      }
      this._frame(frame);
    };
    // A host with close codes says them in a last `close` event.
    es.addEventListener('close', (m) => {
      if (this._es !== es) return;
      let close = {};
      try { close = JSON.parse(m.data); } catch { /* as a dropped stream */ }
      this._ended(close);
    });
    // EventSource would reconnect by itself, from its last event id; this client resumes from
    // what it has seen, with the same backoff as sockets.
    es.onerror = () => {
      if (this._es !== es) return;
      // A stream that never welcomed us was refused (a bad token answers 401, which an
      // EventSource cannot read) or could not reach the host: the pages count these.
      if (!this._welcomed) this._failedOpens += 1;
      this._ended({});
    };
  }

  /** The event stream ended: banned, refused, or dropped (then reconnect). */
  _ended({ code, reason }) {
    if (this._es) this._es.close();
    this._es = null;
    this._failPending({ code: 'disconnected', message: 'the connection dropped; try again' });
    if (code === CLOSE_BANNED) {
      this._stopped = true;
      this._setStatus('banned', { code: 'banned', message: reason || 'you are banned from this room' });
      return;
    }
    this._reconnectSoon();
  }

  /** One command over HTTP (a host without WebSockets): its answer is the ack or the error. */
  async _post(command) {
    let res;
    try {
      res = await fetch(`${this.origin}/v1/rooms/${encodeURIComponent(this.show)}/commands`, {
        method: 'POST',
        headers: { authorization: `Bearer ${this.token}`, 'content-type': 'application/json' },
        body: JSON.stringify(command),
        signal: AbortSignal.timeout(this.commandTimeoutMs),
      });
    } catch (e) {
      const code = e.name === 'TimeoutError' ? 'no_answer' : 'disconnected';
      throw new RoomError({ code, message: code === 'no_answer' ? 'the room did not answer' : 'the connection dropped; try again' });
    }
    const body = await res.json().catch(() => ({}));
    if (res.ok && body.type !== 'error') return body;
    throw new RoomError(body.error ?? (body.code ? body : { code: 'http_' + res.status, message: res.statusText }));
  }

  _reconnectSoon(delay) {
    if (this._stopped || this._ws || this._es) return;
    clearTimeout(this._timer);
    if (delay === undefined) {
      // 0.5 s, 1 s, 2 s ... up to 15 s, with jitter so a room's viewers do not return at once.
      const base = Math.min(15_000, 500 * 2 ** Math.min(this._attempt, 5));
      delay = base / 2 + Math.random() * (base / 2);
    }
    this._attempt += 1;
    this._setStatus('reconnecting', { inMs: delay, attempt: this._attempt, failedOpens: this._failedOpens });
    this._timer = setTimeout(() => this._open(), delay);
  }

  _frame(frame) {
    const type = frame.type;
    if (type === 'welcome') return this._welcome(frame);
    if (type === 'ack') return this._settle(frame.id, frame, null);
    if (type === 'error') {
      if (frame.id && this._pending.has(frame.id)) return this._settle(frame.id, null, new RoomError(frame));
      this._emit('notice', new RoomError(frame));
      return;
    }
    const durable = typeof frame.at === 'number' && typeof frame.seq === 'number' && !LATEST_STATE.has(type);
    if (durable) {
      // Exactly once: skip anything at or before what we already have from this epoch.
      if (frame.epoch === this.epoch && this.seq !== null && frame.seq <= this.seq) return;
      this.epoch = frame.epoch;
      this.seq = frame.seq;
    } else if (LATEST_STATE.has(type) && frame.epoch === this.epoch && frame.seq > (this.seq ?? -1)) {
      // Latest-state frames follow every event before their seq on this connection.
      this.seq = frame.seq;
    }
    this._emit('frame', frame);
    this._emit(type, frame);
  }

  _welcome(frame) {
    this._welcomed = true;
    this._attempt = 0;
    this.you = frame.you;
    // The room's clock, for countdowns to deal ends.
    if (typeof frame.now === 'number') this.clockOffset = frame.now - Date.now();
    if (!frame.resumed) {
      // A fresh snapshot: the state is as of the welcome's seq.
      this.epoch = frame.epoch;
      this.seq = frame.seq;
    }
    // When resumed, the missed events follow and advance seq one by one.
    this._setStatus('open');
    this._emit('welcome', frame);
  }

  _settle(id, ack, err) {
    const p = this._pending.get(id);
    if (!p) return;
    this._pending.delete(id);
    clearTimeout(p.timer);
    if (err) p.reject(err);
    else p.resolve(ack);
  }

  _failPending(frame) {
    for (const id of [...this._pending.keys()]) this._settle(id, null, new RoomError(frame));
  }

  get connected() {
    const open = (!!this._ws && this._ws.readyState === WebSocket.OPEN)
      || (!!this._es && this._es.readyState === EventSource.OPEN);
    return open && this._welcomed;
  }

  /**
   * Sends a command with a fresh id. Resolves with the `ack` frame (`{id, seq?, held?}`), rejects
   * with a RoomError (`code`, `message`, `retryAfterMs`).
   */
  send(type, fields = {}) {
    if (!this.connected) {
      return Promise.reject(new RoomError({ code: 'offline', message: 'not connected to the room yet' }));
    }
    const id = commandId();
    if (this._es) return this._post({ type, id, ...fields });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => this._settle(id, null, new RoomError({ code: 'no_answer', message: 'the room did not answer' })),
        this.commandTimeoutMs,
      );
      this._pending.set(id, { resolve, reject, timer });
      this._ws.send(JSON.stringify({ type, id, ...fields }));
    });
  }

  /** Sends a signal (react, product.impression, product.click): no id, no ack. False if offline. */
  signal(type, fields = {}) {
    if (!this.connected) return false;
    if (this._es) {
      this._post({ type, ...fields }).catch(() => {});
      return true;
    }
    this._ws.send(JSON.stringify({ type, ...fields }));
    return true;
  }
}

/** How often a feed viewer says it is still watching (the node forgets a device after 60 s). */
const HEARTBEAT_MS = 20_000;

/**
 * The room's public feed (docs/protocol.md, "The public feed"): a snapshot, then long polls
 * `?after=<next>` that a CDN caches and collapses, so every viewer at one position costs the node
 * one request per cache. Emits a `welcome` (with `you: null`) for each snapshot, then the public
 * event frames and the latest-state frames, as a RoomClient would. While it runs it sends the
 * heartbeats that count this viewer as watching, and says it is leaving when closed or when the
 * page goes away.
 */
export class FeedClient extends Frames {
  /** @param {{show: string, origin?: string}} opts */
  constructor({ show, origin = location.origin }) {
    super();
    this.show = show;
    this.base = `${origin}/v1/rooms/${encodeURIComponent(show)}`;
    /** The position to ask after (`<epoch>-<seq>`), and the wait round an empty answer named. */
    this.next = null;
    this._wait = null;
    this._stopped = true;
    this._attempt = 0;
    this._abort = null;
    this._beat = null;
    this._onPageHide = () => this._heartbeat(true);
    this._onVisible = () => { if (document.visibilityState === 'visible') this._heartbeat(false); };
  }

  connect() {
    if (!this._stopped) return;
    this._stopped = false;
    this._setStatus('connecting');
    this._heartbeat(false);
    // A hidden page is not watching: it stops counting after the node's 60 s.
    this._beat = setInterval(this._onVisible, HEARTBEAT_MS);
    window.addEventListener('pagehide', this._onPageHide);
    document.addEventListener('visibilitychange', this._onVisible);
    this._loop();
  }

  /** Stops reading and takes this viewer off the count at once (a socket counts them now). */
  close() {
    if (this._stopped) return;
    this._stopped = true;
    this._abort?.abort();
    clearInterval(this._beat);
    window.removeEventListener('pagehide', this._onPageHide);
    document.removeEventListener('visibilitychange', this._onVisible);
    this._heartbeat(true);
    this._setStatus('closed');
  }

  _heartbeat(leaving) {
    const url = `${this.base}/heartbeat`;
    // Leaving happens as the page goes away: only a beacon is sure to outlive it. The others are
    // fetches, so the device cookie the first answer sets is kept for the next.
    if (leaving && navigator.sendBeacon?.(url, JSON.stringify({ leaving: true }))) return;
    fetch(url, { method: 'POST', body: leaving ? '{"leaving":true}' : '', keepalive: true }).catch(() => {});
  }

  _url() {
    if (!this.next) return `${this.base}/feed`;
    return `${this.base}/feed?after=${this.next}${this._wait !== null ? `&wait=${this._wait}` : ''}`;
  }

  async _loop() {
    while (!this._stopped) {
      this._abort = new AbortController();
      let page;
      try {
        const res = await fetch(this._url(), { signal: this._abort.signal });
        const body = await res.json().catch(() => null);
        if (res.status === 404) {
          this._stopped = true;
          this._setStatus('failed', body?.error || { code: 'show_not_found' });
          return;
        }
        // A position the node cannot read: start again from a snapshot.
        if (res.status === 400) this.next = null;
        if (!res.ok || !body) throw new Error(`feed: HTTP ${res.status}`);
        page = body;
      } catch {
        if (this._stopped) return;
        // 0.5 s, 1 s, 2 s ... up to 15 s, with jitter, as the socket reconnects.
        const base = Math.min(15_000, 500 * 2 ** Math.min(this._attempt, 5));
        const delay = base / 2 + Math.random() * (base / 2);
        this._attempt += 1;
        this._setStatus('reconnecting', { inMs: delay, attempt: this._attempt });
        await new Promise((r) => setTimeout(r, delay));
        continue;
      }
      this._attempt = 0;
      this._page(page);
    }
  }

  _page(page) {
    if (typeof page.now === 'number') this.clockOffset = page.now - Date.now();
    this.next = page.next;
    this._wait = page.wait ?? null;
    if (page.state) {
      this._setStatus('open');
      this._emit('welcome', { type: 'welcome', resumed: false, epoch: page.epoch, seq: page.seq, now: page.now, you: null, state: page.state });
      return;
    }
    if (this.status !== 'open') this._setStatus('open');
    for (const frame of [...(page.events || []), ...(page.latest || [])]) {
      this._emit('frame', frame);
      this._emit(frame.type, frame);
    }
  }
}

// ----- Helpers both pages use -----

/** ISO 4217 minor-unit exponents that are not 2. */
const EXPONENTS = {
  BIF: 0, CLP: 0, DJF: 0, GNF: 0, ISK: 0, JPY: 0, KMF: 0, KRW: 0, PYG: 0, RWF: 0, UGX: 0, UYI: 0,
  VND: 0, VUV: 0, XAF: 0, XOF: 0, XPF: 0,
  BHD: 3, IQD: 3, JOD: 3, KWD: 3, LYD: 3, OMR: 3, TND: 3,
  CLF: 4, UYW: 4,
};

export function currencyExponent(currency) {
  return EXPONENTS[currency] ?? 2;
}

/** Formats `{minor, currency}` exactly (no float rounding) in the reader's locale. */
export function formatMoney(price, locale = navigator.language) {
  if (!price || typeof price.minor !== 'number' || !price.currency) return '';
  const exp = currencyExponent(price.currency);
  const digits = String(Math.abs(Math.trunc(price.minor))).padStart(exp + 1, '0');
  const whole = digits.slice(0, digits.length - exp);
  const decimal = (price.minor < 0 ? '-' : '') + (exp ? `${whole}.${digits.slice(-exp)}` : whole);
  try {
    return new Intl.NumberFormat(locale, {
      style: 'currency',
      currency: price.currency,
      minimumFractionDigits: exp,
      maximumFractionDigits: exp,
    }).format(decimal);
  } catch {
    return `${decimal} ${price.currency}`;
  }
}

/** "1:02:03", "12:34" or "0:05" for a duration in ms. */
export function formatDuration(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}

/** "6 s", "5 min", "2 h" for a wait in ms. */
export function formatWait(ms) {
  const s = Math.max(1, Math.ceil(ms / 1000));
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${Math.round(s / 3600)} h`;
}

/** Friendly text for a refused command; `retryIn` overrides the wait shown. */
export function describeError(err, retryIn = err.retryAfterMs) {
  const wait = retryIn ? `, retry in ${formatWait(retryIn)}` : '';
  switch (err.code) {
    case 'slow_mode': return `Slow mode is on${wait}`;
    case 'rate_limited': return `You're sending too fast${wait}`;
    case 'timed_out': return `You are timed out${wait}`;
    case 'question_rate_limited': return `One question a minute${wait}`;
    case 'link_not_allowed': return 'Links are not allowed in this room';
    case 'blocked_content': return "That message breaks the room's rules";
    case 'duplicate_message': return 'You just said that';
    case 'empty_message': return 'Say something first';
    case 'banned': return 'You are banned from this room';
    case 'already_upvoted': return 'You already upvoted that';
    case 'poll_closed': return 'The poll is closed';
    case 'offline': return 'Not connected, reconnecting…';
    case 'disconnected': return 'The connection dropped; try again';
    default: return err.message ? err.message[0].toUpperCase() + err.message.slice(1) : err.code;
  }
}

// ----- Icons -----
// Inline SVG: emoji glyphs need an emoji font, which many machines (and Debian's Chromium) lack.

const ICONS = {
  eye: '<path d="M2 12s3.6-6.5 10-6.5S22 12 22 12s-3.6 6.5-10 6.5S2 12 2 12z"/><circle cx="12" cy="12" r="3"/>',
  cart: '<path d="M3 4h2.2l2.3 10.6a1.2 1.2 0 0 0 1.2.9h8.9a1.2 1.2 0 0 0 1.1-.8L21 8H6.1"/><circle cx="9.5" cy="19.5" r="1.3"/><circle cx="17" cy="19.5" r="1.3"/>',
  muted: '<path d="M4 9.5v5h3.5L12 18.5v-13L7.5 9.5H4z"/><path d="M16 9.5l5 5M21 9.5l-5 5"/>',
  sound: '<path d="M4 9.5v5h3.5L12 18.5v-13L7.5 9.5H4z"/><path d="M15.5 9a4 4 0 0 1 0 6M18.5 6.5a8 8 0 0 1 0 11"/>',
  pin: '<path d="M12 16.5V22M8.5 3h7l-1 6.2 3 2.8v2.2h-11V12l3-2.8z"/>',
  bolt: '<path d="M13.5 2.5 5 13.5h6.2l-1 8 8.5-11h-6.2z"/>',
  bag: '<path d="M5.5 8h13l-1 12.5h-11z"/><path d="M9 10V7a3 3 0 0 1 6 0v3"/>',
  close: '<path d="M6 6l12 12M18 6 6 18"/>',
};

/** An inline SVG icon (`eye`, `cart`, `muted`, `sound`, `pin`, `bolt`, `bag`, `close`), hidden from screen readers. */
export function icon(name) {
  const span = document.createElement('span');
  span.className = `icon icon-${name}`;
  span.setAttribute('aria-hidden', 'true');
  span.innerHTML = `<svg viewBox="0 0 24 24" width="1em" height="1em" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round">${ICONS[name]}</svg>`;
  return span;
}

/** Words for the reactions a host is likely to pick, shown where the emoji cannot be drawn. */
const EMOJI_WORDS = {
  '❤️': 'Love', '❤': 'Love', '🔥': 'Fire', '😂': 'Haha', '👏': 'Clap', '😮': 'Wow', '🛍️': 'Want',
  '👍': 'Like', '🎉': 'Yay', '😍': 'Love it', '💯': '100', '🤩': 'Wow', '😢': 'Sad', '🙌': 'Yes',
  '✨': 'Nice', '💸': 'Deal', '🛒': 'Buy',
};

const drawable = new Map();
/**
 * True when this browser draws every character of `text` with a real glyph: each is drawn on a
 * canvas and compared with a character no font has (the "missing glyph" box).
 */
export function canDraw(text) {
  if (drawable.has(text)) return drawable.get(text);
  const canvas = document.createElement('canvas');
  canvas.width = canvas.height = 24;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const pixels = (t) => {
    ctx.clearRect(0, 0, 24, 24);
    ctx.font = '20px sans-serif';
    ctx.textBaseline = 'top';
    ctx.fillText(t, 0, 0);
    return ctx.getImageData(0, 0, 24, 24).data.join();
  };
  const missing = pixels('\u{10FFFD}');
  // Joiners and variation selectors have no glyph of their own.
  const chars = [...text].filter((c) => !/[\u200d\ufe0e\ufe0f]/.test(c));
  const ok = chars.length > 0 && chars.every((c) => pixels(c) !== missing);
  drawable.set(text, ok);
  return ok;
}

/** A host's reaction as this browser can show it: the emoji, or a word where it would be a box. */
export function reactionLabel(emoji) {
  return canDraw(emoji) ? emoji : EMOJI_WORDS[emoji] || 'React';
}

/** Tiny DOM builder: h('div', {class: 'x', onclick: f, dataset: {id: 1}}, 'text', child). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'class') el.className = v;
    else if (k === 'style' && typeof v === 'object') Object.assign(el.style, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'testid') el.setAttribute('data-testid', v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** The show id from `/watch/{show}` or `/dashboard/{show}` (or `?show=`), default `demo`. */
export function showFromLocation() {
  const q = new URLSearchParams(location.search).get('show');
  if (q) return q;
  const parts = location.pathname.split('/').filter(Boolean);
  return parts.length >= 2 ? decodeURIComponent(parts[1]) : 'demo';
}

/** The `#token=` of the URL fragment, if any. */
export function tokenFromFragment() {
  return new URLSearchParams(location.hash.replace(/^#/, '')).get('token');
}

/**
 * A token this browser kept in localStorage under `key` (`{token, subject, ...}`), or null (and
 * forgotten) when it is missing, unreadable or expired.
 */
export function storedToken(key) {
  try {
    const stored = JSON.parse(localStorage.getItem(key) || 'null');
    if (stored?.token && !tokenExpired(stored.token) && tokenClaims(stored.token)) return stored;
  } catch {
    // Unreadable: as good as none.
  }
  localStorage.removeItem(key);
  return null;
}

/**
 * The dashboard's token for `show`: taken from a `#token=` link once, then kept in this tab's
 * sessionStorage (a reload still works) and removed from the URL, so it is not left in the
 * address bar, the history, bookmarks or a shared screenshot. Null when there is none.
 */
export function dashboardToken(show) {
  const key = `liveshop.dashboard-token.${show}`;
  const fromLink = tokenFromFragment();
  if (fromLink) {
    sessionStorage.setItem(key, fromLink);
    history.replaceState(history.state, '', location.pathname + location.search);
  }
  return fromLink || sessionStorage.getItem(key);
}

/** GET/POST JSON; throws an Error with `.code` from `{"error": {"code", "message"}}`. */
export async function api(path, { method = 'GET', body, token } = {}) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try {
    data = await res.json();
  } catch {
    // An empty or non-JSON body.
  }
  if (!res.ok) {
    const e = new Error(data?.error?.message || `${method} ${path}: HTTP ${res.status}`);
    e.code = data?.error?.code || `http_${res.status}`;
    e.status = res.status;
    throw e;
  }
  return data;
}

/** Display name of a message's or question's author. */
export function authorName(m) {
  return m.name || m.user;
}

/**
 * The shop's live product feed (server-sent events at `{base}/live`), as the viewer's cards and
 * the dashboard's deals both follow it. Returns `{products, now()}`: the products by id as the
 * feed last described them, and the shop's clock (so deal countdowns follow the shop, not ours).
 * `onChange(frame)` runs after each `shop.products` frame is applied; `frame.full` marks a snapshot.
 * `gate(frame, apply)` decides when a frame is applied (the viewer's waits for the video).
 */
export function shopFeed(base, onChange, gate = (_frame, apply) => apply()) {
  let clockOffset = 0;
  const feed = { products: new Map(), now: () => Date.now() + clockOffset };
  // EventSource reconnects by itself; the shop starts every connection with a full snapshot.
  new EventSource(`${base}/live`).onmessage = (m) => {
    let f;
    try {
      f = JSON.parse(m.data);
    } catch {
      return;
    }
    if (f.type !== 'shop.products') return;
    if (typeof f.now === 'number') clockOffset = f.now - Date.now();
    gate(f, () => {
      if (f.full) feed.products.clear();
      for (const p of f.products || []) feed.products.set(p.id, p);
      for (const id of f.removed || []) feed.products.delete(id);
      onChange(f);
    });
  };
  return feed;
}
