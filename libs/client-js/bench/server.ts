// The event source of bench/cpu.ts, in its own process: a WebSocket server that welcomes a
// client and then sends RATE event frames per second (batches every 10 ms), seq 1, 2, 3, …
import { WebSocketServer } from "ws";

const rate = Number(process.env.RATE ?? 20_000);
const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
wss.on("listening", () => {
  const address = wss.address();
  if (typeof address === "object" && address) process.send?.({ port: address.port });
});
wss.on("connection", (ws) => {
  ws.once("message", () => {
    ws.send(JSON.stringify({ type: "welcome", conn: "c", user: "u", node: "bench", rooms: { bench: { seq: 0 } }, heartbeat: 20 }));
    let seq = 0;
    const started = Date.now();
    const timer = setInterval(() => {
      const due = Math.floor(((Date.now() - started) * rate) / 1000);
      while (seq < due) {
        seq++;
        ws.send(
          `{"type":"event","room":"bench","seq":${seq},"id":"e${seq}","kind":"message","user":"alice","ts":${Date.now()},"data":{"text":"hello world, message number ${seq}","client_id":"c${seq}"}}`,
        );
      }
    }, 10);
    ws.on("close", () => clearInterval(timer));
  });
});
