// The client's behaviour against a scripted socket (no network): what it sends, when it
// reconnects, what it delivers. The real gateways are in tests/client_js (pytest) via test/e2e.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  Client,
  ConnectionClosedError,
  ConnectionLost,
  QueueFull,
  type ClientOptions,
  type EventFrame,
  type SocketLike,
} from "../src/index.js";

class FakeSocket implements SocketLike {
  static all: FakeSocket[] = [];
  sent: Record<string, unknown>[] = [];
  closedWith: number | null = null;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  constructor(readonly url: string) {
    FakeSocket.all.push(this);
  }
  send(data: string): void {
    this.sent.push(JSON.parse(data));
  }
  close(code = 1000): void {
    this.closedWith = code;
  }
  // -- the test's side
  open(): void {
    this.onopen?.({});
  }
  deliver(frame: Record<string, unknown>): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  welcome(rooms: Record<string, number> = {}, heartbeat = 20): void {
    this.open();
    const positions = Object.fromEntries(Object.entries(rooms).map(([r, seq]) => [r, { seq }]));
    this.deliver({ type: "welcome", conn: "c", user: "u", node: "n", rooms: positions, heartbeat });
  }
  drop(code = 1006, reason = ""): void {
    this.onclose?.({ code, reason });
  }
  ofType(type: string): Record<string, unknown>[] {
    return this.sent.filter((f) => f.type === type);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(f: () => T | undefined | null | false, what: string, ms = 3000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

function make(options: Partial<ClientOptions> = {}): Client {
  FakeSocket.all = [];
  return new Client({
    urls: ["ws://a/ws", "ws://b/ws"],
    token: "t1",
    WebSocket: FakeSocket,
    backoff: { base: 10, cap: 20 },
    ...options,
  });
}

const socket = (i: number) => until(() => FakeSocket.all[i], `socket ${i}`);

function event(room: string, seq: number, text = `m${seq}`): Record<string, unknown> {
  return { type: "event", room, seq, id: `e${seq}`, kind: "message", user: "u", ts: 1, data: { text, client_id: `c${seq}` } };
}

test("auth frame first; welcome rooms tracked; duplicates dropped and gaps filled in order", async () => {
  const c = make();
  const got: number[] = [];
  c.on("event", (e: EventFrame) => got.push(e.seq as number));
  const connected = c.connect();
  const s = await socket(0);
  s.welcome({ general: 3 });
  await connected;
  assert.deepEqual(s.sent[0], { type: "auth", token: "t1" });
  s.deliver(event("general", 4));
  s.deliver(event("general", 4));
  s.deliver(event("general", 6));
  s.deliver(event("general", 5));
  assert.deepEqual(got, [4, 5, 6]);
  assert.equal(c.stats.duplicates, 1);
  c.close();
  assert.equal(c.state, "closed");
});

test("a reconnect resumes with since on the next URL and re-sends unacked sends with the same id", async () => {
  const c = make();
  const got: number[] = [];
  c.on("event", (e: EventFrame) => got.push(e.seq as number));
  const connected = c.connect();
  const a = await socket(0);
  a.welcome({ general: 1 });
  await connected;
  const first = c.send("general", "one", { id: "id-1" });
  a.drop(1006);
  assert.equal(c.state, "reconnecting");
  const offline = c.send("general", "two", { id: "id-2" }); // queued while disconnected
  const b = await socket(1);
  assert.equal(b.url, "ws://b/ws");
  b.welcome({ general: 3 });
  const join = b.ofType("join")[0];
  assert.deepEqual({ room: join?.room, since: join?.since }, { room: "general", since: 1 });
  assert.deepEqual(b.ofType("send").map((f) => f.id), ["id-1", "id-2"]);
  // The gateway's answer: joined, the missed events, acks; a live event beyond is held first.
  b.deliver(event("general", 4));
  b.deliver({ type: "joined", ref: join?.ref, room: "general", seq: 3, recovered: true, missed: 2 });
  b.deliver(event("general", 2));
  b.deliver(event("general", 3));
  for (const [i, f] of b.ofType("send").entries()) {
    b.deliver({ type: "ack", ref: f.ref, room: "general", seq: i + 2, id: `e${i + 2}` });
  }
  assert.equal((await first).seq, 2);
  assert.equal((await offline).seq, 3);
  assert.deepEqual(got, [2, 3, 4]);
  assert.equal(c.stats.reconnects, 1);
  c.close();
});

test("1012 reconnects at once; other closes wait for the backoff", async () => {
  const c = make({ backoff: { base: 400, cap: 400, random: () => 0.99 } });
  const connected = c.connect();
  (await socket(0)).welcome();
  await connected;
  const t0 = Date.now();
  FakeSocket.all[0]?.drop(1012, "restarting");
  (await socket(1)).welcome();
  assert.ok(Date.now() - t0 < 100, "1012: no backoff");
  const t1 = Date.now();
  FakeSocket.all[1]?.drop(1011);
  await socket(2);
  assert.ok(Date.now() - t1 >= 300, "1011: backoff");
  c.close();
});

test("4401 without getToken is final: no reconnect, waiting calls reject", async () => {
  const c = make();
  const connected = c.connect();
  const s = await socket(0);
  s.open();
  s.drop(4401, "token expired");
  await assert.rejects(connected, (e: unknown) => e instanceof ConnectionClosedError && e.code === 4401);
  await sleep(50);
  assert.equal(FakeSocket.all.length, 1);
  assert.equal(c.state, "closed");
  await assert.rejects(c.send("r", "x"), ConnectionClosedError);
});

test("4401 with getToken reconnects with the new token, and stops when it yields the same one", async () => {
  const tokens = ["old", "new", "new"];
  const c = make({ token: undefined, getToken: async () => tokens.shift() ?? "new" });
  const connected = c.connect();
  (await socket(0)).welcome();
  await connected;
  FakeSocket.all[0]?.drop(4401, "token expired");
  const s1 = await socket(1);
  s1.open();
  assert.deepEqual(s1.sent[0], { type: "auth", token: "new" });
  s1.welcome();
  assert.equal(c.state, "connected");
  s1.drop(4401, "token expired");
  await until(() => c.state === "closed", "closed");
  assert.equal(FakeSocket.all.length, 2, "the same token is not tried again");
  assert.equal(c.fatal?.code, 4401);
});

test("a refresh hint with getToken: a fresh token in an auth frame on the same socket", async () => {
  const tokens = ["t1", "t2", "t3"];
  const c = make({ token: undefined, getToken: async () => tokens.shift() ?? "t3" });
  const connected = c.connect();
  const s = await socket(0);
  s.welcome();
  await connected;
  s.deliver({ type: "refresh", exp: 1000, expires_in: 2 });
  s.deliver({ type: "refresh", exp: 1000, expires_in: 1.5 }); // a repeated hint: answered once
  const auth = await until(() => s.ofType("auth")[1], "the refresh auth frame");
  assert.equal(auth.token, "t2");
  assert.equal(typeof auth.ref, "string");
  s.deliver({ type: "ack", ref: auth.ref, exp: 2000 });
  await until(() => c.stats.refreshes === 1, "the refresh acknowledged");
  assert.equal(c.tokenExp, 2000);
  assert.equal(s.ofType("auth").length, 2, "one auth per expiry");
  // The next hint (the new token's) is answered too, still on the same socket.
  s.deliver({ type: "refresh", exp: 2000, expires_in: 2 });
  const again = await until(() => s.ofType("auth")[2], "the second refresh");
  assert.equal(again.token, "t3");
  s.deliver({ type: "ack", ref: again.ref, exp: 3000 });
  await until(() => c.stats.refreshes === 2, "the second refresh acknowledged");
  assert.equal(FakeSocket.all.length, 1);
  assert.equal(c.stats.connects, 1);
  // A 4401 now refused t3 (the socket's token since the refresh): getToken yielding t3 again stops.
  s.drop(4401, "token revoked");
  await until(() => c.state === "closed", "closed");
  assert.equal(FakeSocket.all.length, 1, "the refused refreshed token is not tried again");
});

test("a refused refresh: the expiry's 4401 reconnects with getToken's next token", async () => {
  const tokens = ["t1", "bad", "t3"];
  const c = make({ token: undefined, getToken: async () => tokens.shift() ?? "t3" });
  const connected = c.connect();
  const s = await socket(0);
  s.welcome();
  await connected;
  s.deliver({ type: "refresh", exp: 1000, expires_in: 2 });
  const auth = await until(() => s.ofType("auth")[1], "the refresh auth frame");
  s.deliver({ type: "error", ref: auth.ref, code: "forbidden", message: "the token is for another user" });
  await until(() => c.stats.refreshFailures === 1, "the refresh failure counted");
  assert.equal(c.state, "connected", "a refused refresh keeps the socket until its expiry");
  s.drop(4401, "token expired");
  const s1 = await socket(1);
  s1.open();
  assert.deepEqual(s1.sent[0], { type: "auth", token: "t3" });
  s1.welcome();
  assert.equal(c.state, "connected");
  assert.equal(c.stats.refreshes, 0);
  c.close();
});

test("a refresh hint without getToken is not answered", async () => {
  const c = make();
  const connected = c.connect();
  const s = await socket(0);
  s.welcome();
  await connected;
  s.deliver({ type: "refresh", exp: 1000, expires_in: 2 });
  await sleep(30);
  assert.equal(s.ofType("auth").length, 1, "only the first auth");
  assert.equal(c.tokenExp, 1000);
  assert.equal(c.stats.refreshes + c.stats.refreshFailures, 0);
  c.close();
});

test("the offline queue is bounded", async () => {
  const c = make({ maxPending: 2 });
  const connected = c.connect();
  const a = c.send("r", "1");
  const b = c.send("r", "2");
  await assert.rejects(c.send("r", "3"), QueueFull);
  c.close();
  await assert.rejects(a);
  await assert.rejects(b);
  await assert.rejects(connected);
});

test("rate_limited is waited out and the same frame re-sent", async () => {
  const c = make();
  const connected = c.connect();
  const s = await socket(0);
  s.welcome({ r: 0 });
  await connected;
  const sent = c.send("r", "x", { id: "same" });
  const f = s.ofType("send")[0];
  const t0 = Date.now();
  s.deliver({ type: "error", ref: f?.ref, code: "rate_limited", message: "slow down", retry_after: 150 });
  await until(() => s.ofType("send").length === 2, "the re-send");
  assert.ok(Date.now() - t0 >= 140);
  assert.equal(s.ofType("send")[1]?.id, "same");
  s.deliver({ type: "ack", ref: f?.ref, room: "r", seq: 1, id: "e1" });
  assert.equal((await sent).seq, 1);
  c.close();
});

test("an edit in flight fails with ConnectionLost instead of being repeated", async () => {
  const c = make();
  const connected = c.connect();
  (await socket(0)).welcome({ r: 5 });
  await connected;
  const edit = c.edit("r", 5, "fixed");
  FakeSocket.all[0]?.drop(1006);
  await assert.rejects(edit, ConnectionLost);
  c.close();
});

test("liveness: a ping at half the heartbeat, a reconnect when nothing comes back", async () => {
  const c = make({ livenessTimeout: 300 });
  const connected = c.connect();
  const s = await socket(0);
  s.welcome();
  await connected;
  await until(() => s.ofType("ping").length === 1, "a liveness ping");
  await socket(1);
  assert.equal(c.stats.closes[0], 1006);
  c.close();
});

test("a gap that stays open is filled with join since", async () => {
  const c = make({ gapTimeout: 200 });
  const connected = c.connect();
  const s = await socket(0);
  s.welcome({ r: 1 });
  await connected;
  s.deliver(event("r", 3)); // 2 never arrives live
  const join = await until(() => s.ofType("join")[0], "a join since", 3000);
  assert.equal(join.since, 1);
  c.close();
});

test("events() yields state changes and events, and ends at close", async () => {
  const c = make();
  const seen: string[] = [];
  const reader = (async () => {
    for await (const item of c.events()) seen.push(item.type === "state" ? item.state : `${item.type}`);
  })();
  await sleep(0);
  const connected = c.connect();
  const s = await socket(0);
  s.welcome({ r: 0 });
  await connected;
  s.deliver(event("r", 1));
  s.deliver({ type: "typing", room: "r", user: "v" });
  c.close();
  await reader;
  assert.deepEqual(seen, ["connecting", "connected", "event", "typing", "closed"]);
});

function userWelcome(s: FakeSocket, userStream: Record<string, unknown>): void {
  s.open();
  s.deliver({ type: "welcome", conn: "c", user: "u", node: "n", rooms: {}, heartbeat: 20, user_stream: userStream });
}

function userFrame(seq: number): Record<string, unknown> {
  return { type: "user", seq, id: `u${seq}`, kind: "notice", ts: 1, data: { n: seq } };
}

test("the user stream: tracked from the welcome, resumed with user_since, each seq once", async () => {
  const c = make();
  const got: number[] = [];
  c.on("user", (e) => got.push(e.seq));
  const connected = c.connect();
  const a = await socket(0);
  assert.equal(a.url, "ws://a/ws", "a new session names no user_since");
  userWelcome(a, { seq: 2 });
  await connected;
  a.deliver(userFrame(3));
  a.deliver(userFrame(3));
  assert.deepEqual(got, [3]);
  assert.equal(c.lastUserSeq, 3);
  a.drop(1006);
  const b = await socket(1);
  assert.equal(b.url, "ws://b/ws?user_since=3");
  userWelcome(b, { seq: 5, recovered: true, missed: 2 });
  b.deliver(userFrame(5)); // ahead of time: held until 4 arrives
  b.deliver(userFrame(4));
  b.deliver(userFrame(5));
  assert.deepEqual(got, [3, 4, 5]);
  b.drop(1006);
  const a2 = await socket(2);
  assert.equal(a2.url, "ws://a/ws?user_since=5");
  userWelcome(a2, { seq: 9, recovered: false, missed: 1, first_available: 9 });
  a2.deliver(userFrame(9));
  assert.deepEqual(got, [3, 4, 5, 9], "what no longer exists is skipped, not waited for");
  const ack = c.read("general", 7);
  assert.deepEqual(
    a2.ofType("read").map((f) => [f.room, f.seq]),
    [["general", 7]],
  );
  a2.deliver({ type: "ack", ref: a2.ofType("read")[0]?.ref, room: "general", seq: 7 });
  assert.equal((await ack).seq, 7);
  c.close();
});
