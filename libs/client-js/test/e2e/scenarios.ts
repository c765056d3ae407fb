// End-to-end scenarios of the SDK against real gateways, run by tests/client_js/test_node_e2e.py
// (which starts the gateways, writes the room and mints the tokens):
//
//   node --import tsx test/e2e/scenarios.ts SCENARIO
//
// Environment: GATEWAY_A / GATEWAY_B (ws URLs), GATEWAY_A_PID, ROOM, TOKEN_<USER> per user,
// EXPIRED_TOKEN, REFRESH_TOKENS (the `refresh` scenario: alice's tokens, comma-separated, each
// living longer). Each scenario asserts itself (exit code 1 with the reason on failure) and prints
// one line `RESULT <json>` with what it saw, for the pytest side to check again.
import assert from "node:assert/strict";
import {
  Client,
  CommandError,
  ConnectionClosedError,
  type EventFrame,
  type SocketConstructor,
} from "../../src/index.js";

const env = (name: string): string => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const A = env("GATEWAY_A");
const B = env("GATEWAY_B");
const ROOM = process.env.ROOM ?? "lobby";
const DEADLINE_MS = 30_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, condition: () => boolean, ms = DEADLINE_MS): Promise<void> {
  const end = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await sleep(20);
  }
}

/** One user's client and everything it delivered. */
class Peer {
  readonly client: Client;
  readonly events: EventFrame[] = [];
  readonly acked = new Map<string, number>();
  readonly sentOffline: string[] = [];
  constructor(
    readonly user: string,
    urls: string[],
    extra: Partial<ConstructorParameters<typeof Client>[0]> = {},
  ) {
    this.client = new Client({ urls, token: env(`TOKEN_${user.toUpperCase()}`), ...extra });
    this.client.on("event", (e) => this.events.push(e));
  }
  seqs(): number[] {
    return this.events.filter((e) => e.room === ROOM).map((e) => e.seq as number);
  }
  messageIds(): string[] {
    return this.events
      .filter((e) => e.room === ROOM && e.kind === "message")
      .map((e) => String(e.data.client_id));
  }
  /** Send and wait for the ack, waiting out `rate_limited` (the SDK re-sends by itself). */
  async send(id: string): Promise<void> {
    if (!this.client.connected) this.sentOffline.push(id);
    const ack = await this.client.send(ROOM, `${this.user} ${id}`, { id });
    assert.ok(typeof ack.seq === "number", `ack of ${id} has a seq`);
    this.acked.set(id, ack.seq);
  }
  /** Every seq once, in order, no gap; every message id once. */
  checkExactlyOnce(): void {
    const seqs = this.seqs();
    assert.ok(seqs.length > 0, `${this.user} received events`);
    const first = seqs[0] as number;
    assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => first + i), `${this.user}: in order, no gap, no duplicate`);
    const ids = this.messageIds();
    assert.equal(new Set(ids).size, ids.length, `${this.user}: each message once`);
  }
}

function result(data: Record<string, unknown>): void {
  console.log(`RESULT ${JSON.stringify(data)}`);
}

async function twoGateways(): Promise<void> {
  const alice = new Peer("alice", [A, B]);
  const bob = new Peer("bob", [B, A]);
  await Promise.all([alice.client.connect(), bob.client.connect()]);
  assert.equal(alice.client.url, A);
  assert.equal(bob.client.url, B);
  const ids: string[] = [];
  const sends: Promise<void>[] = [];
  for (let i = 0; i < 20; i++) {
    for (const peer of [alice, bob]) {
      const id = `${peer.user}-${i}`;
      ids.push(id);
      sends.push(peer.send(id));
    }
  }
  await Promise.all(sends);
  for (const peer of [alice, bob]) {
    await until(`${peer.user} has all 40`, () => peer.messageIds().length >= 40);
    peer.checkExactlyOnce();
    assert.deepEqual(new Set(peer.messageIds()), new Set(ids));
    // Delivered in the acked order: the seq of each message is the seq of its ack.
    for (const e of peer.events.filter((x) => x.kind === "message")) {
      assert.equal(e.seq, alice.acked.get(String(e.data.client_id)) ?? bob.acked.get(String(e.data.client_id)));
    }
  }
  assert.deepEqual(alice.seqs(), bob.seqs(), "both clients saw the same sequence");
  result({ seqs: alice.seqs(), ids: alice.messageIds(), bob_ids: bob.messageIds() });
  alice.client.close();
  bob.client.close();
}

/** Clients on A and B send continuously; A is SIGKILLed (or SIGTERMed) mid-conversation. */
async function failover(signal: "SIGKILL" | "SIGTERM"): Promise<void> {
  const onA = ["ann", "abe"].map((u) => new Peer(u, [A, B], signal === "SIGTERM" ? { backoff: { base: 60_000, cap: 60_000, random: () => 0.99 } } : {}));
  const onB = ["bea", "bob"].map((u) => new Peer(u, [B, A]));
  const peers = [...onA, ...onB];
  await Promise.all(peers.map((p) => p.client.connect()));
  assert.deepEqual(peers.map((p) => p.client.url), [A, A, B, B]);
  let phase: "before" | "during" | "after" = "before";
  const phases: Record<string, string[]> = { before: [], during: [], after: [] };
  const closes: { user: string; code?: number; at: number }[] = [];
  const reconnected: { user: string; url?: string; at: number }[] = [];
  const queued: Promise<void>[] = [];
  for (const p of onA) {
    p.client.on("state", (s) => {
      if (s.state === "reconnecting") {
        closes.push({ user: p.user, code: s.code, at: Date.now() });
        // Typed while disconnected: queued in the SDK, sent after the reconnect.
        for (let i = 0; i < 3; i++) {
          const id = `${p.user}-offline-${closes.length}-${i}`;
          phases.during!.push(id);
          queued.push(p.send(id));
        }
      }
      if (s.state === "connected") reconnected.push({ user: p.user, url: s.url, at: Date.now() });
    });
  }
  let stop = false;
  const senders = peers.map(async (p) => {
    for (let i = 0; !stop; i++) {
      const id = `${p.user}-${i}`;
      phases[phase]?.push(id);
      // Do not await during the outage: the sends queue in the SDK while it reconnects.
      if (phase === "during" && !p.client.connected) {
        void p.send(id);
        await sleep(20);
        continue;
      }
      await p.send(id);
      await sleep(10);
    }
  });
  await until("some messages before the kill", () => peers.every((p) => p.acked.size >= 5));
  const killedAt = Date.now();
  process.kill(Number(env("GATEWAY_A_PID")), signal);
  phase = "during";
  await until("the clients of A lost their connection", () => onA.every((p) => closes.some((c) => c.user === p.user)));
  await until("the clients of A are on B again", () => onA.every((p) => p.client.connected && p.client.url === B));
  phase = "after";
  await until("sends after the failover", () => phases.after!.length >= 20);
  stop = true;
  await Promise.all([...senders, ...queued]);
  const sent = Object.values(phases).flat();
  await until("every send acknowledged", () => sent.every((id) => peers.some((p) => p.acked.has(id))));
  await until("every client has every message", () => peers.every((p) => p.messageIds().length >= sent.length));
  await sleep(300); // a duplicate arriving late would show now
  for (const p of peers) {
    p.checkExactlyOnce();
    assert.deepEqual([...p.messageIds()].sort(), [...sent].sort(), `${p.user} received every send exactly once`);
  }
  const offline = onA.flatMap((p) => p.sentOffline);
  result({
    signal,
    sent: sent.length,
    before: phases.before!.length,
    during: phases.during!.length,
    after: phases.after!.length,
    offline: offline.length,
    closes: closes.map((c) => c.code),
    reconnect_ms: reconnected.map((r) => r.at - killedAt),
    urls: onA.map((p) => p.client.stats.urls),
    resent: onA.map((p) => p.client.stats.resent),
    duplicates_dropped: peers.map((p) => p.client.stats.duplicates),
  });
  for (const p of peers) p.client.close();
}

/** A counting WebSocket class: how many sockets the client opened. */
async function countingSocket(): Promise<{ opened: () => number; WebSocket: SocketConstructor }> {
  const { WebSocket } = await import("ws");
  let opened = 0;
  class Counting extends WebSocket {
    constructor(url: string) {
      super(url);
      opened++;
    }
  }
  return { opened: () => opened, WebSocket: Counting as unknown as SocketConstructor };
}

async function tokens(): Promise<void> {
  const expired = env("EXPIRED_TOKEN");
  // With getToken: the expired token is refused (4401), the next one is used.
  const given: string[] = [];
  const queue = [expired, env("TOKEN_ALICE")];
  const fresh = new Client({
    urls: [A, B],
    getToken: () => {
      const token = queue.shift() ?? env("TOKEN_ALICE");
      given.push(token);
      return token;
    },
  });
  const welcome = await fresh.connect();
  assert.equal(welcome.user, "alice");
  assert.deepEqual(fresh.stats.closes, [4401]);
  assert.deepEqual(given.slice(0, 2), [expired, env("TOKEN_ALICE")]);
  const ack = await fresh.send(ROOM, "after a new token");
  assert.ok(typeof ack.seq === "number");
  fresh.close();

  // Without getToken: 4401 is final, no second socket.
  const counter = await countingSocket();
  const stale = new Client({ urls: [A, B], token: expired, WebSocket: counter.WebSocket });
  const states: string[] = [];
  stale.on("state", (s) => states.push(`${s.state}:${s.code ?? ""}`));
  const err = await stale.connect().then(
    () => null,
    (e: unknown) => e,
  );
  assert.ok(err instanceof ConnectionClosedError && err.code === 4401, `rejected with 4401: ${String(err)}`);
  await sleep(1000);
  assert.equal(counter.opened(), 1, "no reconnect loop on 4401");
  assert.equal(stale.state, "closed");
  await assert.rejects(stale.send(ROOM, "x"), ConnectionClosedError);

  // getToken that keeps yielding the same refused token: stops too.
  const counter2 = await countingSocket();
  const same = new Client({ urls: [A, B], getToken: () => expired, WebSocket: counter2.WebSocket });
  const err2 = await same.connect().then(
    () => null,
    (e: unknown) => e,
  );
  assert.ok(err2 instanceof ConnectionClosedError && err2.code === 4401);
  await sleep(1000);
  assert.equal(counter2.opened(), 1, "the same token is not tried again");
  result({ closes: [4401], stale_states: states, opened_without_get_token: counter.opened(), opened_same_token: counter2.opened() });
}

/** A JWT's `exp` (s), read from its payload (no verification: the gateway does that). */
function expOf(token: string): number {
  const payload = token.split(".")[1] ?? "";
  return (JSON.parse(Buffer.from(payload, "base64url").toString()) as { exp: number }).exp;
}

/** Alice's first token lives a few seconds; getToken gives the next (longer-lived) one each time.
 * The gateway (short refresh lead) hints before each expiry: the SDK answers on the SAME socket,
 * which outlives the first two tokens and keeps receiving bob's messages, with no reconnect. */
async function refresh(): Promise<void> {
  const tokens = env("REFRESH_TOKENS").split(",");
  const exps = tokens.map(expOf);
  const queue = [...tokens];
  const given: string[] = [];
  const alice = new Peer("alice", [A, B], {
    getToken: () => {
      const token = queue.length > 1 ? (queue.shift() as string) : (queue[0] as string);
      given.push(token);
      return token;
    },
  });
  const bob = new Peer("bob", [B]);
  await Promise.all([alice.client.connect(), bob.client.connect()]);
  assert.equal(alice.client.url, A);
  // Bob talks until alice's second token is past its exp; each id says when it was sent.
  const sentAt = new Map<string, number>();
  const pastSecond = (exps[1] as number) + 1;
  for (let i = 0; Date.now() / 1000 < pastSecond; i++) {
    const id = `bob-${i}`;
    sentAt.set(id, Date.now() / 1000);
    await bob.send(id);
    await sleep(150);
  }
  await until("alice has every message of bob", () => alice.messageIds().length >= sentAt.size, 10_000);
  alice.checkExactlyOnce();
  const stats = alice.client.stats;
  assert.equal(stats.connects, 1, `one socket all along (closes: ${JSON.stringify(stats.closes)})`);
  assert.deepEqual(stats.closes, [], "the socket was never closed");
  assert.ok(alice.client.connected);
  assert.ok(stats.refreshes >= 2, `both short tokens refreshed (${stats.refreshes})`);
  assert.equal(stats.refreshFailures, 0);
  assert.equal(alice.client.tokenExp, exps[2], "the socket holds the last token");
  const afterFirst = alice.messageIds().filter((id) => (sentAt.get(id) ?? 0) > (exps[0] as number));
  assert.ok(afterFirst.length > 0, "messages received after the first token's exp");
  // Still live: one more message after both expiries arrives on the same socket.
  await bob.send("bob-last");
  await until("alice has the last message", () => alice.messageIds().includes("bob-last"), 10_000);
  assert.equal(alice.client.stats.connects, 1);
  result({
    connects: stats.connects,
    closes: stats.closes,
    refreshes: stats.refreshes,
    given: given.map((t) => tokens.indexOf(t)),
    exps,
    token_exp: alice.client.tokenExp,
    received: alice.messageIds().length,
    received_after_first_exp: afterFirst.length,
  });
  alice.client.close();
  bob.client.close();
}

async function commands(): Promise<void> {
  // edit / delete / history / presence / typing through the SDK.
  const alice = new Peer("alice", [A]);
  const bob = new Peer("bob", [B]);
  const typing: string[] = [];
  bob.client.on("typing", (t) => typing.push(t.user));
  await Promise.all([alice.client.connect(), bob.client.connect()]);
  const ack = await alice.client.send(ROOM, "hello");
  await alice.client.edit(ROOM, ack.seq as number, "hello!");
  const notMine = await bob.client.edit(ROOM, ack.seq as number, "hijack").then(() => null, (e: unknown) => e);
  assert.ok(notMine instanceof CommandError && notMine.code === "forbidden");
  await alice.client.delete(ROOM, ack.seq as number);
  alice.client.typing(ROOM);
  await until("bob sees the edit and the delete", () => bob.events.some((e) => e.kind === "message_deleted"));
  await until("bob sees alice typing", () => typing.includes("alice"));
  const who = await bob.client.presence(ROOM);
  assert.equal(who.type, "presence");
  result({ kinds: bob.events.map((e) => e.kind), presence: who.users });
  alice.client.close();
  bob.client.close();
}

/** Per-user events: two clients of alice (A and B) get every event of her stream once, in order,
 * also the ones published while A is SIGKILLed and her client reconnects to B with `user_since`;
 * a `read` on one reaches the other. Needs ROOMS_URL and SERVICE_TOKEN. */
async function userStream(): Promise<void> {
  const rooms = env("ROOMS_URL");
  const publish = async (n: number): Promise<void> => {
    const r = await fetch(`${rooms}/users/alice/events`, {
      method: "POST",
      headers: { authorization: `Bearer ${env("SERVICE_TOKEN")}`, "content-type": "application/json" },
      body: JSON.stringify({ kind: "notice", data: { n }, id: `n-${n}` }),
    });
    assert.equal(r.status, 201, `publish ${n}: ${r.status}`);
  };
  const seen = new Map<string, number[]>();
  const kinds = new Map<string, string[]>();
  const clients = [
    { name: "onA", client: new Client({ urls: [A, B], token: env("TOKEN_ALICE") }) },
    { name: "onB", client: new Client({ urls: [B], token: env("TOKEN_ALICE") }) },
  ];
  for (const { name, client } of clients) {
    seen.set(name, []);
    kinds.set(name, []);
    client.on("user", (e) => {
      seen.get(name)?.push(e.seq);
      kinds.get(name)?.push(e.kind);
    });
    await client.connect();
    assert.equal(client.lastUserSeq, 0);
  }
  for (const n of [1, 2, 3]) await publish(n);
  await until("both clients have 3", () => clients.every(({ name }) => (seen.get(name) ?? []).length >= 3));
  process.kill(Number(env("GATEWAY_A_PID")), "SIGKILL");
  for (const n of [4, 5, 6]) await publish(n);
  await until("both clients have 6", () => clients.every(({ name }) => (seen.get(name) ?? []).length >= 6));
  const onA = clients[0]!.client;
  const onB = clients[1]!.client;
  await until("onA is back, on B", () => onA.connected && onA.url === B);
  const ack = await onB.read(ROOM, 1);
  assert.equal(ack.seq, 1);
  await until("onA learns the read marker", () => (kinds.get("onA") ?? []).includes("read"));
  await sleep(300); // nothing may come twice
  for (const { name } of clients) {
    assert.deepEqual(seen.get(name), [1, 2, 3, 4, 5, 6, 7], `${name}: each once, in order`);
  }
  assert.equal(onA.welcome?.user_stream?.recovered, true, "the reconnect resumed the stream");
  result({ onA: seen.get("onA"), onB: seen.get("onB"), kinds: kinds.get("onA"), urls: onA.stats.urls });
  onA.close();
  onB.close();
}

const scenarios: Record<string, () => Promise<void>> = {
  "two-gateways": twoGateways,
  sigkill: () => failover("SIGKILL"),
  sigterm: () => failover("SIGTERM"),
  tokens,
  refresh,
  commands,
  "user-stream": userStream,
};

const name = process.argv[2] ?? "";
const run = scenarios[name];
if (run === undefined) {
  console.error(`unknown scenario ${name}; one of ${Object.keys(scenarios).join(", ")}`);
  process.exit(2);
}
const watchdog = setTimeout(() => {
  console.error(`scenario ${name} did not finish in 90 s`);
  process.exit(1);
}, 90_000);
run().then(
  () => {
    clearTimeout(watchdog);
    process.exit(0);
  },
  (error: unknown) => {
    console.error(error instanceof Error ? (error.stack ?? error.message) : error);
    process.exit(1);
  },
);
