// Benchmark (not a test): the client's CPU per received event in Node at 20,000 events/s.
//   npm run build && node --import tsx bench/cpu.ts [seconds]
// A server process (bench/server.ts) sends the events; this process measures its own CPU time
// (process.cpuUsage) over the window, once with the SDK (parse, sequencer, emitter) and once with
// a bare `ws` socket that only JSON.parses each frame (the floor any JS client pays).
import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { WebSocket } from "ws";
import { Client } from "../src/index.js";

const seconds = Number(process.argv[2] ?? 10);
const warmup = 2;
const rate = Number(process.env.RATE ?? 20_000);

async function server(): Promise<{ url: string; stop: () => void }> {
  const child = fork(fileURLToPath(new URL("./server.ts", import.meta.url)), {
    execArgv: ["--import", "tsx"],
    env: { ...process.env, RATE: String(rate) },
  });
  const port = await new Promise<number>((resolve) => child.once("message", (m: { port: number }) => resolve(m.port)));
  return { url: `ws://127.0.0.1:${port}/ws`, stop: () => child.kill() };
}

async function measure(name: string, run: (url: string, count: () => void) => () => void) {
  const srv = await server();
  let events = 0;
  const stop = run(srv.url, () => events++);
  await new Promise((r) => setTimeout(r, warmup * 1000));
  const e0 = events;
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const cpu = process.cpuUsage(c0);
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const n = events - e0;
  stop();
  srv.stop();
  const us = (cpu.user + cpu.system) / n;
  return { client: name, events: n, events_per_s: Math.round(n / wall), cpu_us_per_event: +us.toFixed(2), cpu_percent: +((100 * (cpu.user + cpu.system)) / 1e6 / wall).toFixed(1) };
}

const sdk = await measure("@roomstream/client", (url, count) => {
  const client = new Client({ urls: url, token: "bench" });
  client.on("event", count);
  void client.connect();
  return () => client.close();
});
const bare = await measure("bare ws + JSON.parse", (url, count) => {
  const ws = new WebSocket(url);
  ws.onopen = () => ws.send('{"type":"auth","token":"bench"}');
  ws.onmessage = (m) => {
    const f = JSON.parse(String(m.data));
    if (f.type === "event") count();
  };
  return () => ws.close();
});
console.log(JSON.stringify({ node: process.version, rate, seconds, results: [sdk, bare] }, null, 1));
