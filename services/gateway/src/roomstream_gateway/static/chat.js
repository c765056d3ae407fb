// The chat page, built on @roomstream/client (its browser bundle, /roomstream-client.js): the SDK
// delivers every room event exactly once and in seq order, queues sends while the gateway is
// away and re-sends them under the same id, so this file only keeps the view.
//
// Gateways: this page's own (`/ws`), or `?urls=ws://a/ws,ws://b/ws`. Login: the development login
// (`/dev/token`, only with ROOMSTREAM_DEV_LOGIN=1), else a pasted token.
import { Client, newClientId } from "/roomstream-client.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const ownUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
const urls = (params.get("urls") || ownUrl).split(",").filter(Boolean);

let client = null;
let me = null;
let current = null;
let editing = null; // seq of the message being edited
const rooms = new Map(); // room -> view state

function roomState(room) {
  let r = rooms.get(room);
  if (!r) {
    r = { events: new Map(), edits: new Map(), deleted: new Set(), pending: new Map(), unread: 0, oldest: null, more: true, loaded: false };
    rooms.set(room, r);
  }
  return r;
}

// -- token ----------------------------------------------------------------------------------------
let token = null;
let devUser = null;
function expiresSoon(jwt) {
  try {
    const payload = JSON.parse(atob(jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return typeof payload.exp === "number" && payload.exp * 1000 < Date.now() + 60_000;
  } catch {
    return false;
  }
}
async function getToken() {
  if (devUser && (!token || expiresSoon(token))) {
    const r = await fetch(`/dev/token?user=${encodeURIComponent(devUser)}`);
    if (r.ok) token = (await r.json()).token;
  }
  return token;
}

// -- rendering ------------------------------------------------------------------------------------
let drawQueued = false;
function draw() {
  if (drawQueued) return;
  drawQueued = true;
  requestAnimationFrame(() => {
    drawQueued = false;
    drawRooms();
    drawLog();
  });
}

function drawRooms() {
  const ul = $("rooms");
  ul.replaceChildren();
  for (const [room, r] of [...rooms].sort(([a], [b]) => a.localeCompare(b))) {
    const li = document.createElement("li");
    li.dataset.room = room;
    li.className = room === current ? "active" : "";
    li.append(`#${room}`);
    if (r.unread > 0) {
      const badge = document.createElement("span");
      badge.className = "unread";
      badge.textContent = String(r.unread);
      li.append(badge);
    }
    li.onclick = () => select(room);
    ul.append(li);
  }
}

function drawLog() {
  const log = $("log");
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  log.replaceChildren();
  if (!current) return;
  const r = roomState(current);
  $("title").textContent = `#${current}`;
  if (r.more && r.loaded) {
    const older = document.createElement("button");
    older.id = "older";
    older.textContent = "load older messages";
    older.onclick = () => loadOlder(current);
    log.append(older);
  }
  for (const seq of [...r.events.keys()].sort((a, b) => a - b)) {
    const e = r.events.get(seq);
    if (e.kind === "message") log.append(messageRow(r, e));
    else if (["member_joined", "member_left", "room_created"].includes(e.kind)) {
      const d = document.createElement("div");
      d.className = "sys";
      d.textContent = `${e.user} ${e.kind === "room_created" ? "created the room" : e.kind === "member_joined" ? "joined" : "left"}`;
      log.append(d);
    }
  }
  for (const [id, p] of r.pending) {
    log.append(row({ id, pending: true, user: me, text: p.text, state: p.seq ? "✓ acknowledged" : "sending…" }));
  }
  if (atBottom) log.scrollTop = log.scrollHeight;
}

function messageRow(r, e) {
  const deleted = r.deleted.has(e.seq);
  const edited = r.edits.get(e.seq);
  return row({
    seq: e.seq,
    id: e.data.client_id,
    user: e.user,
    ts: e.ts,
    text: deleted ? "message deleted" : (edited ?? e.data.text),
    state: edited !== undefined && !deleted ? "(edited)" : "",
    deleted,
    own: e.user === me && !deleted,
  });
}

function row({ seq, id, user, ts, text, state, pending, deleted, own }) {
  const d = document.createElement("div");
  d.className = `msg${pending ? " pending" : ""}${deleted ? " deleted" : ""}`;
  if (seq !== undefined) d.dataset.seq = String(seq);
  d.dataset.id = id;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = user;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  const when = document.createElement("span");
  when.className = "when";
  when.textContent = ts ? new Date(ts).toLocaleTimeString() : "";
  const st = document.createElement("span");
  st.className = "state";
  st.textContent = state || "";
  d.append(when, who, body, st);
  if (own) {
    const tools = document.createElement("span");
    tools.className = "tools";
    const edit = document.createElement("button");
    edit.textContent = "edit";
    edit.onclick = () => startEdit(seq, text);
    const del = document.createElement("button");
    del.textContent = "delete";
    del.onclick = () => client.delete(current, seq).catch(showError);
    tools.append(edit, del);
    d.append(tools);
  }
  return d;
}

function banner(text, fatal = false) {
  const b = $("banner");
  b.hidden = !text;
  b.textContent = text || "";
  b.className = fatal ? "fatal" : "";
}

function showError(error) {
  banner(`${error.code || error.name}: ${error.message}`, true);
  setTimeout(() => banner(client && client.connected ? "" : $("banner").textContent), 4000);
}

// -- events ---------------------------------------------------------------------------------------
function apply(e) {
  const r = roomState(e.room);
  if (e.kind === "message_edited") r.edits.set(e.data.target_seq, e.data.text);
  else if (e.kind === "message_deleted") r.deleted.add(e.data.target_seq);
  else r.events.set(e.seq, e);
  if (r.oldest === null || e.seq < r.oldest) r.oldest = e.seq;
}

function onEvent(e) {
  apply(e);
  const r = roomState(e.room);
  if (e.kind === "message") {
    r.pending.delete(e.data.client_id); // our own send, now in the room's sequence
    if (e.room !== current) r.unread++;
  }
  if (e.kind === "member_joined" || e.kind === "member_left") refreshPresence();
  draw();
}

async function loadOlder(room) {
  const r = roomState(room);
  try {
    const page = await client.history(room, { before: r.oldest ?? undefined, limit: 50 });
    for (const e of page.events) apply(e);
    r.more = page.more && page.events.length > 0;
  } catch {
    r.more = false; // history unavailable: the live events still come
  }
  r.loaded = true;
  draw();
}

async function refreshPresence() {
  if (!current || !client || !client.connected) return;
  const room = current;
  try {
    const who = await client.presence(room);
    if (room !== current) return;
    const ul = $("presence");
    ul.replaceChildren(
      ...who.users.map((u) => {
        const li = document.createElement("li");
        li.textContent = u.user;
        return li;
      }),
    );
  } catch {
    // presence is best effort
  }
}

function track(room) {
  const r = roomState(room);
  if (r.oldest === null) r.oldest = (client.lastSeq(room) ?? 0) + 1;
  if (!r.loaded) loadOlder(room);
  if (!current) select(room);
  draw();
}

function select(room) {
  current = room;
  roomState(room).unread = 0;
  editing = null;
  $("text").placeholder = `message #${room}`;
  refreshPresence();
  draw();
}

function startEdit(seq, text) {
  editing = seq;
  $("text").value = text;
  $("text").placeholder = `editing message #${seq}`;
  $("text").focus();
}

// -- wiring ---------------------------------------------------------------------------------------
function start() {
  client = new Client({ urls, getToken });
  window.roomstreamChat = { client, rooms, snapshot };
  client.on("event", onEvent);
  client.on("presence", refreshPresence);
  let typingTimer;
  client.on("typing", (t) => {
    if (t.room !== current || t.user === me) return;
    $("typing").textContent = `${t.user} is typing…`;
    clearTimeout(typingTimer);
    typingTimer = setTimeout(() => ($("typing").textContent = ""), 3000);
  });
  client.on("state", (s) => {
    document.body.dataset.state = s.state;
    $("status").textContent = s.state === "connected" ? `on ${client.welcome?.node}` : s.state;
    if (s.state === "connected") {
      banner("");
      me = client.welcome.user;
      $("me").hidden = false;
      $("me").textContent = `${me} · ${client.welcome.node}`;
      for (const room of Object.keys(client.welcome.rooms)) track(room);
      refreshPresence();
    } else if (s.state === "reconnecting" || (s.state === "connecting" && s.code)) {
      banner(`Connection lost${s.code ? ` (${s.code})` : ""}: reconnecting… messages you send now are queued.`);
    } else if (s.state === "closed" && s.code && s.code !== 1000) {
      banner(`Disconnected (${s.code}${s.reason ? ` ${s.reason}` : ""}). Log in again.`, true);
      $("login").hidden = false;
    }
    draw();
  });
  $("text").disabled = false;
  $("sendbutton").disabled = false;
  client.connect().catch(() => {}); // a final close shows in the banner
}

/** What the page shows for `room`, for tests: [{seq, user, text, pending}] in display order. */
function snapshot(room) {
  return [...document.querySelectorAll("#log .msg")].map((d) => ({
    seq: d.dataset.seq ? Number(d.dataset.seq) : null,
    id: d.dataset.id,
    user: d.querySelector(".who").textContent,
    text: d.querySelector(".text").textContent,
    pending: d.classList.contains("pending"),
    state: d.querySelector(".state").textContent,
    room,
  }));
}

$("login").onsubmit = async (e) => {
  e.preventDefault();
  const name = $("user").value.trim();
  const pasted = $("token").value.trim();
  if (pasted) {
    token = pasted;
    devUser = null;
  } else if (name) {
    const r = await fetch(`/dev/token?user=${encodeURIComponent(name)}`).catch(() => null);
    if (!r || !r.ok) {
      $("token").hidden = false;
      banner("Development login is off on this gateway: paste a token.", true);
      return;
    }
    token = (await r.json()).token;
    devUser = name;
  } else return;
  if (client) client.close();
  rooms.clear();
  current = null;
  $("login").hidden = true;
  start();
};

$("joinform").onsubmit = async (e) => {
  e.preventDefault();
  const room = $("room").value.trim();
  if (!room || !client) return;
  try {
    await client.join(room);
    track(room);
    select(room);
  } catch (error) {
    showError(error);
  }
};

let lastTyping = 0;
$("text").oninput = () => {
  const now = Date.now();
  if (current && editing === null && now - lastTyping > 2000) {
    lastTyping = now;
    client.typing(current);
  }
};

$("sendform").onsubmit = (e) => {
  e.preventDefault();
  const text = $("text").value;
  if (!text.trim() || !current || !client) return;
  $("text").value = "";
  const room = current;
  if (editing !== null) {
    const seq = editing;
    editing = null;
    $("text").placeholder = `message #${room}`;
    client.edit(room, seq, text).catch(showError);
    return;
  }
  const id = newClientId();
  const r = roomState(room);
  r.pending.set(id, { text, seq: null });
  draw();
  client.send(room, text, { id }).then(
    (ack) => {
      const p = r.pending.get(id);
      if (p) p.seq = ack.seq; // acknowledged; the event itself replaces the row
      draw();
    },
    (error) => {
      r.pending.delete(id);
      draw();
      showError(error);
    },
  );
};
