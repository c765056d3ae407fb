/**
 * The roomstream client: one logical session over a WebSocket that survives reconnects. The
 * TypeScript twin of `roomstream_client.Client` (libs/client); the pure parts are `Sequencer`
 * (exactly once, in seq order, per room) and `Backoff` (full jitter).
 *
 * - Every room event is delivered exactly once and in seq order per room, across reconnects.
 * - A lost connection (or close 1011 / 1013) reconnects after a full-jitter backoff, 1012 (the
 *   gateway is restarting) at once, each attempt on the next URL; every followed room resumes
 *   with `join(room, since = last)`.
 * - Sends made while disconnected wait in a bounded queue; every unacknowledged send is re-sent
 *   under the same client id after a reconnect, so it is appended once. `rate_limited` is waited
 *   out (`retry_after`) and the command re-sent.
 * - 4401 is final unless `getToken` yields a token other than the rejected one; 1008 and 1009 are
 *   final. With `getToken`, the gateway's `refresh` hint (the socket's token expires soon) is
 *   answered with an `auth` frame carrying a fresh token, so the socket outlives its first token. No frame within `welcome.heartbeat` (an application `ping` is sent at half of it) →
 *   the connection is dropped and the client reconnects.
 */
import { Backoff, type BackoffOptions } from "./backoff.js";
import { Emitter } from "./emitter.js";
import {
  ClientClosed,
  CommandError,
  ConnectionClosedError,
  ConnectionLost,
  QueueFull,
  RequestTimeout,
} from "./errors.js";
import type {
  AckFrame,
  ClientFrame,
  ErrorFrame,
  EventFrame,
  HistoryFrame,
  JoinedFrame,
  PongFrame,
  PresenceFrame,
  ServerFrame,
  TypingFrame,
  UserFrame,
  WelcomeFrame,
} from "./generated/protocol.js";
import { Sequencer } from "./sequencer.js";

export type ConnectionState = "connecting" | "connected" | "reconnecting" | "closed";

/** A change of the connection state, with the close code and reason that caused it. */
export interface StateChange {
  type: "state";
  state: ConnectionState;
  /** The close code of the lost connection (`reconnecting`, `closed`). */
  code?: number;
  reason?: string;
  /** The gateway URL (`connecting`, `connected`). */
  url?: string;
}

/** What `events()` yields: room events (with or without seq), typing notices, state changes,
 * and events of the user's own stream (`user` frames: per-user events, read markers). */
export type ClientEvent = EventFrame | TypingFrame | StateChange | UserFrame;

/** The user stream's key in `userSequencer` (no room id starts with `~`). */
const USER_STREAM = "~";

/** The emitter's events. */
export interface ClientEvents {
  /** A room event with a seq: exactly once, in seq order per room. */
  event: EventFrame;
  /** A presence change: an event of kind `online` / `offline` (no seq). */
  presence: EventFrame;
  /** Someone is typing (live only). */
  typing: TypingFrame;
  /** An event of the user's own stream: exactly once, in seq order, across reconnects. */
  user: UserFrame;
  state: StateChange;
  /** An `error` frame without a ref (nothing was waiting for it). */
  error: ErrorFrame;
}

/** The part of the WebSocket API the client uses (browsers' `WebSocket`, the `ws` package). */
export interface SocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}
export type SocketConstructor = new (url: string) => SocketLike;

export interface ClientOptions {
  /** One gateway URL (`ws://host:8000/ws`) or several; each (re)connect tries the next. */
  urls: string | readonly string[];
  /** A JWT. */
  token?: string;
  /** Called before every connection attempt; after a 4401 the client reconnects only when it
   * returns a token other than the rejected one. Also called on the gateway's `refresh` hint: the
   * fresh token is sent on the open socket (`auth` frame), which then lives past the old `exp`. */
  getToken?: () => string | Promise<string>;
  /** The WebSocket class (default: `globalThis.WebSocket`, else the `ws` package). */
  WebSocket?: SocketConstructor;
  backoff?: BackoffOptions;
  /** Time for a reply once a command is on the wire, ms (default 30 000). */
  requestTimeout?: number;
  /** Time from opening a socket to its `welcome`, ms (default 10 000). */
  openTimeout?: number;
  /** A gap in a room's seqs open this long is filled with `join since`, ms (default 5 000). */
  gapTimeout?: number;
  /** Most unacknowledged sends (queued offline or in flight) before `send` rejects with
   * `QueueFull` (default 1 000). */
  maxPending?: number;
  /** Override of the liveness timeout, ms (default: `welcome.heartbeat`). */
  livenessTimeout?: number;
}

export interface Stats {
  connects: number;
  reconnects: number;
  /** Event frames received (before the sequencer). */
  events: number;
  /** Commands re-sent after a reconnect or a `rate_limited`. */
  resent: number;
  /** Duplicates dropped by the sequencer. */
  duplicates: number;
  /** The URL of every connection that got a `welcome`, in order. */
  urls: string[];
  /** The close code of every lost socket (1006: dropped without a close frame). */
  closes: number[];
  /** Token refreshes on an open socket the gateway acknowledged (`refresh` hint → `auth` → `ack`). */
  refreshes: number;
  /** Token refreshes that failed (`error` reply, timeout, `getToken` threw, socket lost). */
  refreshFailures: number;
}

interface Pending {
  frame: ClientFrame & { ref: string };
  resolve: (frame: ServerFrame) => void;
  reject: (error: Error) => void;
  /** Re-send after a reconnect (idempotent or read-only) instead of failing. */
  retry: boolean;
  /** The connection generation it was last sent on (-1: not on the wire). */
  sentOn: number;
  timer?: ReturnType<typeof setTimeout>;
}

/** Close codes after which reconnecting cannot help (the same frames would fail again). */
const FATAL = new Set([1008, 1009]);
const NOT_AUTHENTICATED = 4401;
const RESTARTING = 1012;
/** Refused tokens in a row (each a new one from `getToken`) before the client gives up. */
const MAX_AUTH_FAILURES = 3;
const THROTTLED = new Set(["send", "edit", "delete"]);

/** A fresh client message id (random, 128 bits). */
export function newClientId(): string {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  let id = "";
  for (const b of bytes) id += (b < 16 ? "0" : "") + b.toString(16);
  return id;
}

async function defaultSocket(): Promise<SocketConstructor> {
  const native = (globalThis as { WebSocket?: SocketConstructor }).WebSocket;
  if (native !== undefined) return native;
  const ws = await import("ws"); // Node without a global WebSocket
  return (ws.WebSocket ?? ws.default) as unknown as SocketConstructor;
}

export class Client extends Emitter<ClientEvents> {
  readonly urls: readonly string[];
  readonly sequencer = new Sequencer<EventFrame>();
  /** The user's own stream (`user` frames), resumed on reconnect with `user_since`. */
  readonly userSequencer = new Sequencer<UserFrame>();
  readonly stats: Stats = {
    connects: 0,
    reconnects: 0,
    events: 0,
    resent: 0,
    duplicates: 0,
    urls: [],
    closes: [],
    refreshes: 0,
    refreshFailures: 0,
  };
  /** The `welcome` of the current (or last) connection. */
  welcome: WelcomeFrame | null = null;
  /** The URL of the current (or last) connection. */
  url: string | null = null;
  state: ConnectionState = "closed";
  /** The error that ended the session (a final close code), if any. */
  fatal: ConnectionClosedError | null = null;
  /** The `exp` (s since the epoch) of the current socket's token, once the gateway told it (a
   * `refresh` hint or the `ack` of a refresh); null before. */
  tokenExp: number | null = null;

  private readonly options: ClientOptions;
  private readonly backoff: Backoff;
  private readonly pending = new Map<string, Pending>();
  private readonly iterators = new Set<(item: ClientEvent | null) => void>();
  private socketClass: SocketConstructor | undefined;
  private ws: SocketLike | null = null;
  private generation = 0;
  private welcomed = false;
  private started = false;
  private closed = false;
  private urlIndex = 0;
  private refs = 0;
  private usedToken: string | null = null;
  private rejectedToken: string | null = null;
  /** The `exp` of the last `refresh` hint answered on this socket: a hint for it again (the
   * fresh token was no fresher, so the gateway hints at once) is not answered in a loop. */
  private answeredExp = 0;
  /** 4401s since the last `welcome` (a token source that keeps failing is given up). */
  private authFailures = 0;
  private lastFrameAt = 0;
  private pingSent = false;
  private holdUntil = 0;
  private retryTimer?: ReturnType<typeof setTimeout>;
  private openTimer?: ReturnType<typeof setTimeout>;
  private tick?: ReturnType<typeof setInterval>;
  private firstWelcome?: { resolve: (w: WelcomeFrame) => void; reject: (e: Error) => void };

  constructor(options: ClientOptions) {
    super();
    this.options = options;
    this.urls = typeof options.urls === "string" ? [options.urls] : [...options.urls];
    if (this.urls.length === 0) throw new TypeError("at least one gateway URL is needed");
    if (options.token === undefined && options.getToken === undefined) {
      throw new TypeError("token or getToken is needed");
    }
    this.backoff = new Backoff(options.backoff);
    this.socketClass = options.WebSocket;
  }

  get connected(): boolean {
    return this.state === "connected";
  }

  /** The last seq of `room` delivered to the application, or null when it is not followed. */
  lastSeq(room: string): number | null {
    return this.sequencer.last(room);
  }

  /** The last seq of the user's own stream delivered to the application, or null before the
   * first `welcome`. */
  get lastUserSeq(): number | null {
    return this.userSequencer.last(USER_STREAM);
  }

  // -- lifecycle ---------------------------------------------------------------------------------

  /** Open the first connection; resolves with its `welcome`. Keeps trying every URL with backoff;
   * rejects with `ConnectionClosedError` on a final close code, `ClientClosed` after `close()`. */
  connect(): Promise<WelcomeFrame> {
    if (this.started) return Promise.reject(new Error("connect() was called already"));
    this.started = true;
    const welcome = new Promise<WelcomeFrame>((resolve, reject) => {
      this.firstWelcome = { resolve, reject };
    });
    this.setState({ type: "state", state: "connecting", url: this.urls[0] });
    void this.open();
    return welcome;
  }

  /** Close the connection and stop; waiting calls reject with `ClientClosed`. */
  close(): void {
    if (this.closed) return;
    this.finish(new ClientClosed("client closed"), 1000, "client closed");
  }

  // -- commands ----------------------------------------------------------------------------------

  /** Join (and subscribe to) `room`. Without `since`, a followed room resumes where it was and a
   * new one starts now; with `since` the events after it are replayed as `event`s. */
  async join(room: string, options: { since?: number } = {}): Promise<JoinedFrame> {
    let since = options.since;
    if (since !== undefined) this.deliver(this.sequencer.reset(room, since));
    else since = this.sequencer.last(room) ?? undefined;
    return (await this.request({ type: "join", room, since }, true)) as JoinedFrame;
  }

  async leave(room: string): Promise<AckFrame> {
    const ack = (await this.request({ type: "leave", room }, true)) as AckFrame;
    this.sequencer.forget(room);
    return ack;
  }

  /** Send a message; resolves with its `ack` (the room's `seq`). Survives reconnects: re-sent with
   * the same client id until acknowledged, so it is appended exactly once. */
  send(room: string, text: string, options: { id?: string } = {}): Promise<AckFrame> {
    let unacked = 0;
    for (const p of this.pending.values()) if (p.frame.type === "send") unacked++;
    const max = this.options.maxPending ?? 1000;
    if (unacked >= max) {
      return Promise.reject(new QueueFull(`${unacked} sends wait for an ack (maxPending ${max})`));
    }
    const id = options.id ?? newClientId();
    return this.request({ type: "send", room, text, id }, true) as Promise<AckFrame>;
  }

  /** Edit one's own message. Not repeated blindly: lost in flight → `ConnectionLost`. */
  edit(room: string, seq: number, text: string): Promise<AckFrame> {
    return this.request({ type: "edit", room, seq, text }, false) as Promise<AckFrame>;
  }

  /** Delete one's own message. Not repeated blindly: lost in flight → `ConnectionLost`. */
  delete(room: string, seq: number): Promise<AckFrame> {
    return this.request({ type: "delete", room, seq }, false) as Promise<AckFrame>;
  }

  /** A page of older events (newest page first, ascending within the page). */
  history(room: string, options: { before?: number; limit?: number } = {}): Promise<HistoryFrame> {
    const frame = { type: "history" as const, room, before: options.before, limit: options.limit };
    return this.request(frame, true) as Promise<HistoryFrame>;
  }

  /** Who is online in `room`, across all gateways. */
  presence(room: string): Promise<PresenceFrame> {
    return this.request({ type: "presence", room }, true) as Promise<PresenceFrame>;
  }

  /** Tell the room this user is typing (live only; dropped while disconnected). */
  typing(room: string): void {
    if (this.connected) this.write({ type: "typing", room });
  }

  /** Set the user's read marker of `room` to `seq` (max wins: the `ack` carries the marker in
   * force). The user's other sockets get a `user` frame of kind `read`. */
  read(room: string, seq: number): Promise<AckFrame> {
    return this.request({ type: "read", room, seq }, true) as Promise<AckFrame>;
  }

  ping(): Promise<PongFrame> {
    return this.request({ type: "ping" }, true) as Promise<PongFrame>;
  }

  // -- events ------------------------------------------------------------------------------------

  /** Every room event exactly once and in seq order per room, typing notices and state changes,
   * from now on. Ends after `close()`; throws `ConnectionClosedError` after a final close. */
  async *events(): AsyncGenerator<ClientEvent, void, undefined> {
    const queue: (ClientEvent | null)[] = [];
    let wake: (() => void) | null = null;
    const push = (item: ClientEvent | null): void => {
      queue.push(item);
      wake?.();
    };
    this.iterators.add(push);
    try {
      for (;;) {
        if (queue.length === 0) {
          if (this.closed) break;
          await new Promise<void>((resolve) => (wake = resolve));
          wake = null;
          continue;
        }
        const item = queue.shift();
        if (item === null || item === undefined) break;
        yield item;
      }
      if (this.fatal !== null) throw this.fatal;
    } finally {
      this.iterators.delete(push);
    }
  }

  // -- internals: requests -----------------------------------------------------------------------

  private request(frame: ClientFrame, retry: boolean): Promise<ServerFrame> {
    if (this.closed) return Promise.reject(this.fatal ?? new ClientClosed("client closed"));
    const ref = `r${++this.refs}`;
    return new Promise<ServerFrame>((resolve, reject) => {
      const p: Pending = { frame: { ...frame, ref }, resolve, reject, retry, sentOn: -1 };
      this.pending.set(ref, p);
      this.transmit(p);
    });
  }

  /** Put `p` on the current connection (no-op while disconnected: `attach` flushes the queue). */
  private transmit(p: Pending): void {
    if (!this.connected || p.sentOn === this.generation || !this.pending.has(p.frame.ref)) return;
    const wait = this.holdUntil - Date.now();
    if (wait > 0 && THROTTLED.has(p.frame.type)) {
      setTimeout(() => this.transmit(p), wait);
      return;
    }
    p.sentOn = this.generation;
    clearTimeout(p.timer);
    const timeout = this.options.requestTimeout ?? 30_000;
    p.timer = setTimeout(() => {
      this.settle(p.frame.ref)?.reject(
        new RequestTimeout(`no reply to ${p.frame.type} within ${timeout} ms`),
      );
    }, timeout);
    this.write(p.frame);
  }

  private write(frame: ClientFrame): void {
    const ws = this.ws;
    if (ws === null) return;
    try {
      ws.send(JSON.stringify(frame, dropNull));
    } catch {
      // The socket is closing: its close event brings the reconnect and the re-send.
    }
  }

  /** Remove a pending request (and its timer); returns it when it was still pending. */
  private settle(ref: string): Pending | undefined {
    const p = this.pending.get(ref);
    if (p === undefined) return undefined;
    clearTimeout(p.timer);
    this.pending.delete(ref);
    return p;
  }

  private reply(msg: ServerFrame & { ref?: string | null }): void {
    const ref = msg.ref;
    if (typeof ref !== "string") {
      if (msg.type === "error") this.emit("error", msg);
      return;
    }
    const p = this.pending.get(ref);
    if (p === undefined) return;
    if (msg.type !== "error") {
      this.settle(ref)?.resolve(msg);
      return;
    }
    if (msg.code === "rate_limited") {
      // Not applied: wait out the budget and send the same frame again (same client id).
      const wait = msg.retry_after ?? 1000;
      this.holdUntil = Math.max(this.holdUntil, Date.now() + wait);
      p.sentOn = -1;
      clearTimeout(p.timer);
      this.stats.resent++;
      setTimeout(() => this.transmit(p), wait);
      return;
    }
    this.settle(ref)?.reject(
      new CommandError(msg.code, msg.message, ref, msg.retry_after ?? undefined),
    );
  }

  // -- internals: connection ---------------------------------------------------------------------

  private async open(): Promise<void> {
    if (this.closed) return;
    const url = this.urls[this.urlIndex++ % this.urls.length] as string;
    let token: string;
    try {
      this.socketClass ??= await defaultSocket();
      token = this.options.getToken ? await this.options.getToken() : (this.options.token ?? "");
    } catch {
      this.retryAfter(this.backoff.next()); // getToken failed (its server away?): try again
      return;
    }
    if (this.closed) return;
    if (this.rejectedToken !== null) {
      if (token === this.rejectedToken) {
        this.finish(new ConnectionClosedError(NOT_AUTHENTICATED, "token rejected"));
        return;
      }
      this.rejectedToken = null;
    }
    this.usedToken = token;
    const generation = ++this.generation;
    this.welcomed = false;
    this.tokenExp = null;
    this.answeredExp = 0;
    let ws: SocketLike;
    try {
      const since = this.userSequencer.last(USER_STREAM);
      ws = new this.socketClass(since === null ? url : withQuery(url, "user_since", String(since)));
    } catch (error) {
      this.finish(new ConnectionClosedError(1002, String(error))); // a malformed URL
      return;
    }
    this.ws = ws;
    this.url = url;
    ws.onopen = () => {
      if (generation === this.generation) ws.send(JSON.stringify({ type: "auth", token }));
    };
    ws.onmessage = (ev) => {
      if (generation === this.generation) this.receive(ev.data);
    };
    ws.onclose = (ev) => {
      if (generation === this.generation) this.lost(ev.code, ev.reason);
    };
    ws.onerror = () => {}; // a close event follows
    clearTimeout(this.openTimer);
    this.openTimer = setTimeout(() => {
      if (generation === this.generation && !this.welcomed) this.drop(1006, "no welcome in time");
    }, this.options.openTimeout ?? 10_000);
  }

  /** Abandon the current socket (its later events are ignored) and handle it as lost. */
  private drop(code: number, reason: string): void {
    const ws = this.ws;
    this.generation++;
    try {
      ws?.close(4000, reason);
    } catch {
      // already closed
    }
    this.lost(code, reason);
  }

  private lost(code: number, reason: string): void {
    this.ws = null;
    clearTimeout(this.openTimer);
    clearInterval(this.tick);
    this.tick = undefined;
    if (this.closed) return;
    this.stats.closes.push(code);
    const wasWelcomed = this.welcomed;
    this.welcomed = false;
    if (code === NOT_AUTHENTICATED && this.options.getToken === undefined) {
      this.finish(new ConnectionClosedError(code, reason));
      return;
    }
    if (FATAL.has(code)) {
      this.finish(new ConnectionClosedError(code, reason));
      return;
    }
    if (code === NOT_AUTHENTICATED && ++this.authFailures > MAX_AUTH_FAILURES) {
      this.finish(new ConnectionClosedError(code, reason));
      return;
    }
    this.failUnsafe();
    const state = this.stats.connects === 0 ? "connecting" : "reconnecting";
    this.setState({ type: "state", state, code, reason });
    if (code === NOT_AUTHENTICATED) {
      // open() goes on only with another token: at once when the token expired during a session,
      // after the backoff when the gateway refused a fresh one.
      this.rejectedToken = this.usedToken;
      this.retryAfter(wasWelcomed ? 0 : this.backoff.next());
    } else if (code === RESTARTING && wasWelcomed) {
      this.retryAfter(0);
    } else {
      this.retryAfter(this.backoff.next());
    }
  }

  private retryAfter(delay: number): void {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void this.open(), delay);
  }

  /** Fail in-flight commands that must not be repeated blindly (edit, delete). */
  private failUnsafe(): void {
    for (const [ref, p] of this.pending) {
      if (!p.retry && p.sentOn !== -1) {
        this.settle(ref)?.reject(
          new ConnectionLost(`connection lost before the reply to ${p.frame.type}`),
        );
      }
    }
  }

  private receive(data: unknown): void {
    this.lastFrameAt = Date.now();
    this.pingSent = false;
    let msg: ServerFrame;
    try {
      msg = JSON.parse(typeof data === "string" ? data : String(data)) as ServerFrame;
    } catch {
      return; // not JSON: ignored (clients ignore what they do not understand)
    }
    if (msg === null || typeof msg !== "object") return;
    if (!this.welcomed) {
      if (msg.type === "welcome") this.attach(msg);
      return;
    }
    switch (msg.type) {
      case "event":
        this.stats.events++;
        if (msg.seq === undefined || msg.seq === null) {
          this.emit("presence", msg);
          this.push(msg);
        } else {
          this.deliver(this.sequencer.offer(msg.room, msg.seq, msg, Date.now()));
        }
        return;
      case "typing":
        this.emit("typing", msg);
        this.push(msg);
        return;
      case "user":
        this.deliverUser(this.userSequencer.offer(USER_STREAM, msg.seq, msg, Date.now()));
        return;
      case "refresh":
        this.tokenExp = msg.exp;
        if (this.options.getToken !== undefined && msg.exp > this.answeredExp) {
          this.answeredExp = msg.exp; // one answer per expiry, even if the hint repeats
          void this.refreshToken(this.generation);
        }
        return;
      case "joined":
        if (!msg.recovered && typeof msg.first_available === "number") {
          this.deliver(this.sequencer.skipTo(msg.room, msg.first_available));
        }
        this.deliver(this.sequencer.track(msg.room, msg.seq));
        break;
    }
    this.reply(msg);
  }

  /** A `welcome`: this socket is the connection; resume rooms and flush the queue. */
  private attach(welcome: WelcomeFrame): void {
    this.welcomed = true;
    this.authFailures = 0;
    clearTimeout(this.openTimer);
    this.backoff.reset();
    this.welcome = welcome;
    this.stats.connects++;
    if (this.stats.connects > 1) this.stats.reconnects++;
    this.stats.urls.push(this.url ?? "");
    const position = welcome.user_stream;
    if (position) {
      // A resumed stream skips what no longer exists; the missed events follow the welcome.
      if (position.recovered === false && typeof position.first_available === "number") {
        this.deliverUser(this.userSequencer.skipTo(USER_STREAM, position.first_available));
      }
      this.deliverUser(this.userSequencer.track(USER_STREAM, position.seq));
    }
    const resuming = this.sequencer.positions();
    const joining = new Set<string>();
    for (const p of this.pending.values()) if (p.frame.type === "join") joining.add(p.frame.room);
    // Rooms of the user the client did not follow yet start now.
    for (const [room, position] of Object.entries(welcome.rooms)) {
      if (position && !resuming.has(room) && !joining.has(room)) {
        this.deliver(this.sequencer.track(room, position.seq));
      }
    }
    this.setState({ type: "state", state: "connected", url: this.url ?? undefined });
    this.startTick(welcome.heartbeat);
    // Catch up with every followed room (the replay fills the gap since the lost connection),
    // before the queued commands: the gateway runs a socket's commands in order.
    for (const room of resuming.keys()) if (!joining.has(room)) void this.resume(room);
    for (const p of [...this.pending.values()]) {
      if (p.sentOn === this.generation) continue;
      if (p.sentOn !== -1) this.stats.resent++;
      if (p.frame.type === "join") p.frame.since = this.sequencer.last(p.frame.room) ?? p.frame.since;
      this.transmit(p);
    }
    const first = this.firstWelcome;
    this.firstWelcome = undefined;
    first?.resolve(welcome);
  }

  /** Answer a `refresh` hint on connection `generation`: a fresh token from `getToken` in an
   * `auth` frame. On `ack` the socket's token is the new one; on anything else the socket keeps
   * its old expiry, is closed 4401 at it, and the 4401 reconnect (with `getToken`) takes over. */
  private async refreshToken(generation: number): Promise<void> {
    const getToken = this.options.getToken;
    if (getToken === undefined) return;
    try {
      const token = await getToken();
      // Only on the socket that asked: a refresh must never wait in the queue for the next one.
      if (generation !== this.generation || !this.connected || this.closed) return;
      const ack = (await this.request({ type: "auth", token }, false)) as AckFrame;
      if (generation !== this.generation) return;
      this.usedToken = token; // a later 4401 rejected this token, not the first one
      if (typeof ack.exp === "number") this.tokenExp = ack.exp;
      this.stats.refreshes++;
    } catch {
      // Refused (`error`), timed out, getToken failed or the socket went: the expiry closes it.
      if (generation === this.generation) this.stats.refreshFailures++;
    }
  }

  private async resume(room: string): Promise<void> {
    try {
      await this.join(room);
    } catch (error) {
      // The room is gone or no longer ours: stop following it.
      if (error instanceof CommandError && (error.code === "not_found" || error.code === "forbidden")) {
        this.sequencer.forget(room);
      }
    }
  }

  /** Liveness and gaps, checked a few times per heartbeat while connected. */
  private startTick(heartbeatS: number): void {
    const liveness = this.options.livenessTimeout ?? heartbeatS * 1000;
    const gapTimeout = this.options.gapTimeout ?? 5000;
    const every = Math.max(100, Math.min(1000, liveness / 4, gapTimeout / 2));
    this.lastFrameAt = Date.now();
    this.pingSent = false;
    clearInterval(this.tick);
    this.tick = setInterval(() => {
      const now = Date.now();
      const idle = now - this.lastFrameAt;
      if (liveness > 0 && idle > liveness) {
        this.drop(1006, `no frame within ${liveness} ms`);
        return;
      }
      if (liveness > 0 && idle > liveness / 2 && !this.pingSent) {
        this.pingSent = true;
        this.write({ type: "ping", ref: "liveness" });
      }
      const joining = new Set<string>();
      for (const p of this.pending.values()) if (p.frame.type === "join") joining.add(p.frame.room);
      for (const room of this.sequencer.stalled(now, gapTimeout)) {
        if (!joining.has(room)) void this.resume(room);
      }
    }, every);
  }

  private finish(error: ClientClosed | ConnectionClosedError, code?: number, reason?: string): void {
    this.closed = true;
    if (error instanceof ConnectionClosedError) this.fatal = error;
    clearTimeout(this.retryTimer);
    clearTimeout(this.openTimer);
    clearInterval(this.tick);
    const ws = this.ws;
    this.ws = null;
    this.generation++;
    try {
      ws?.close(1000);
    } catch {
      // already closed
    }
    for (const ref of [...this.pending.keys()]) this.settle(ref)?.reject(error);
    const first = this.firstWelcome;
    this.firstWelcome = undefined;
    first?.reject(error);
    const closeCode = error instanceof ConnectionClosedError ? error.code : code;
    const closeReason = error instanceof ConnectionClosedError ? error.reason : reason;
    this.setState({ type: "state", state: "closed", code: closeCode, reason: closeReason });
    for (const push of this.iterators) push(null);
  }

  private setState(change: StateChange): void {
    this.state = change.state;
    this.emit("state", change);
    this.push(change);
  }

  private deliver(events: EventFrame[]): void {
    this.stats.duplicates = this.sequencer.duplicates;
    for (const event of events) {
      this.emit("event", event);
      this.push(event);
    }
  }

  private deliverUser(events: UserFrame[]): void {
    for (const event of events) {
      this.emit("user", event);
      this.push(event);
    }
  }

  private push(item: ClientEvent): void {
    for (const push of this.iterators) push(item);
  }
}

/** `url` with the query parameter `name` set to `value` (an earlier value replaced). */
function withQuery(url: string, name: string, value: string): string {
  const [base = "", query = ""] = url.split("?", 2);
  const params = new URLSearchParams(query);
  params.set(name, value);
  return `${base}?${params.toString()}`;
}

/** JSON.stringify replacer: optional fields left unset are not sent (the gateway validates). */
function dropNull(_key: string, value: unknown): unknown {
  return value === null ? undefined : value;
}
