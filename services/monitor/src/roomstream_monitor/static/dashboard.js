// roomstream monitor dashboard: polls /api/stats and /api/timeseries and updates Chart.js charts.
// The service token comes from the URL fragment (#token=...) or the form, kept in localStorage.
// Under the development runner (ROOMSTREAM_DEV_LOGIN=1) the monitor hands out one at /dev/token:
// the page takes it when it has none or its token is refused, so it opens with data.
"use strict";

const POLL_MS = 2000;
const WINDOW_S = 300;
const FIXED = { up: "#16a34a", failed: "#dc2626", p50: "#2563eb", p90: "#ca8a04", p99: "#dc2626" };
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];

function readToken() {
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    localStorage.setItem("roomstream-token", decodeURIComponent(match[1]));
  }
  return localStorage.getItem("roomstream-token") || "";
}

let token = readToken();

function lineChart(id, yTitle) {
  return new Chart(document.getElementById(id), {
    type: "line",
    data: { datasets: [] },
    options: {
      animation: false,
      maintainAspectRatio: false,
      parsing: false,
      normalized: true,
      scales: {
        x: { type: "linear", ticks: { callback: (v) => new Date(v).toLocaleTimeString(), maxTicksLimit: 5 } },
        y: { beginAtZero: true, title: { display: !!yTitle, text: yTitle } },
      },
      plugins: { legend: { position: "bottom", labels: { boxWidth: 10 } } },
      elements: { point: { radius: 0 } },
    },
  });
}

const charts = {
  connections: lineChart("chart-connections", "connections"),
  messages: lineChart("chart-messages", "msg/s"),
  latency: lineChart("chart-latency", "ms"),
  lag: lineChart("chart-lag", "entries"),
  nodes: lineChart("chart-nodes", "nodes"),
  rooms: new Chart(document.getElementById("chart-rooms"), {
    type: "bar",
    data: { labels: [], datasets: [{ label: "msg/s", data: [], backgroundColor: COLORS[0] }] },
    options: { animation: false, maintainAspectRatio: false, indexAxis: "y", plugins: { legend: { display: false } } },
  }),
};
window.roomstreamCharts = charts; // for tests and the browser console

function setSeries(chart, named) {
  // named: {label: [{x, y}, ...]}; keeps dataset objects so colours stay stable.
  const labels = Object.keys(named).sort();
  chart.data.datasets = labels.map((label, i) => {
    const old = chart.data.datasets.find((d) => d.label === label);
    const color = FIXED[label] || COLORS[i % COLORS.length];
    const ds = old || { label, borderColor: color, backgroundColor: color, borderWidth: 2, data: [] };
    ds.data = named[label];
    return ds;
  });
  chart.update();
}

async function api(path) {
  const response = await fetch(path, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  const body = await response.json();
  if (!response.ok) {
    const err = new Error(body.error ? `${body.error.code}: ${body.error.message}` : response.statusText);
    err.status = response.status;
    throw err;
  }
  return body;
}

function text(id, value) {
  document.getElementById(id).textContent = value;
}

function renderStats(stats) {
  text("tile-nodes", stats.nodes);
  text("tile-failed", stats.failed_nodes.length);
  text("tile-connections", stats.connections);
  text("tile-rate", stats.messages_per_s.toFixed(2));
  const p99 = stats.delivery_latency_ms.p99;
  text("tile-p99", p99 === null ? "–" : p99.toFixed(1));
  text("tile-redis", stats.redis_latency_ms.toFixed(2));
  const tbody = document.querySelector("#nodes tbody");
  tbody.replaceChildren(...stats.per_node.map((n) => {
    const tr = document.createElement("tr");
    tr.dataset.node = n.node;
    for (const v of [n.node, n.kind, n.connections, n.rooms, (n.memory_bytes / 1e6).toFixed(1), n.cpu_percent, n.uptime_s, n.messages_per_s]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.appendChild(td);
    }
    return tr;
  }));
  document.getElementById("failed").replaceChildren(...stats.failed_nodes.map((f) => {
    const li = document.createElement("li");
    li.textContent = `${f.node} — declared dead at ${new Date(f.failed_ms).toLocaleTimeString()}`;
    return li;
  }));
  renderGroups(stats);
  renderHooks(stats.hooks);
  charts.rooms.data.labels = stats.busiest_rooms.map((r) => r.room);
  charts.rooms.data.datasets[0].data = stats.busiest_rooms.map((r) => r.messages_per_s);
  charts.rooms.update();
}

// Consumer groups: lag, how far behind, stuck, dead letters (docs/monitor.md).
function renderGroups(stats) {
  const dead = stats.dead_letters || {};
  const behind = stats.consumer_behind_ms || {};
  const stuck = new Set(stats.consumer_stuck || []);
  const groups = [...new Set([...Object.keys(stats.consumer_lag), ...Object.keys(dead)])].sort();
  document.querySelector("#groups tbody").replaceChildren(...groups.map((g) => {
    const tr = document.createElement("tr");
    tr.dataset.group = g;
    if (stuck.has(g) || dead[g]) tr.className = "alert";
    const cells = [g, stats.consumer_lag[g] ?? 0, (stats.consumer_pending || {})[g] ?? 0,
      ((behind[g] ?? 0) / 1000).toFixed(1), stuck.has(g) ? "yes" : "no", dead[g] ?? 0];
    for (const v of cells) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.appendChild(td);
    }
    return tr;
  }));
}

// Webhooks: per endpoint, from the hooks instances' metrics (docs/monitor.md); absent without them.
function renderHooks(hooks) {
  const panel = document.getElementById("hooks-panel");
  panel.hidden = !hooks;
  if (!hooks) return;
  text("hooks-instances", `(${hooks.instances} instance${hooks.instances === 1 ? "" : "s"})`);
  const ms = (v) => (v === null || v === undefined ? "–" : v.toFixed(1));
  document.querySelector("#hooks tbody").replaceChildren(...hooks.endpoints.map((e) => {
    const tr = document.createElement("tr");
    tr.dataset.endpoint = e.endpoint;
    if (e.dead_letters > 0 || (e.failures_per_s > 0 && e.backlog > 0)) tr.className = "alert";
    const cells = [e.endpoint, e.delivered, e.delivered_per_s.toFixed(1), e.failures,
      e.failures_per_s.toFixed(1), ms(e.latency_ms.p50), ms(e.latency_ms.p99), e.backlog, e.dead_letters];
    for (const v of cells) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.appendChild(td);
    }
    return tr;
  }));
}

function renderSeries(series) {
  const snaps = series.snapshots;
  const conns = {};
  const lag = {};
  const latency = { p50: [], p90: [], p99: [] };
  const nodes = { up: [], failed: [] };
  for (const s of snaps) {
    for (const [node, n] of Object.entries(s.connections)) (conns[node] ||= []).push({ x: s.ts, y: n });
    for (const [group, n] of Object.entries(s.consumer_lag)) (lag[group] ||= []).push({ x: s.ts, y: n });
    for (const q of ["p50", "p90", "p99"]) {
      if (s.delivery_latency_ms[q] !== null) latency[q].push({ x: s.ts, y: s.delivery_latency_ms[q] });
    }
    nodes.up.push({ x: s.ts, y: s.nodes });
    nodes.failed.push({ x: s.ts, y: s.failed });
  }
  setSeries(charts.connections, conns);
  setSeries(charts.lag, lag);
  setSeries(charts.latency, latency);
  setSeries(charts.nodes, nodes);
  setSeries(charts.messages, { "messages/s": series.messages.map(([x, y]) => ({ x, y })) });
}

let devLoginTried = false;
async function devToken() {
  // Once per refusal: a 404 (production) leaves the token form to the operator.
  if (devLoginTried) return false;
  devLoginTried = true;
  try {
    const response = await fetch("/dev/token");
    if (!response.ok) return false;
    token = (await response.json()).token;
    localStorage.setItem("roomstream-token", token);
    return true;
  } catch {
    return false;
  }
}

async function poll() {
  if (!token) await devToken();
  try {
    const [stats, series] = await Promise.all([api("/api/stats"), api(`/api/timeseries?seconds=${WINDOW_S}`)]);
    renderStats(stats);
    renderSeries(series);
    const status = document.getElementById("status");
    status.dataset.state = "ok";
    status.textContent = `updated ${new Date(stats.updated_ms).toLocaleTimeString()}`;
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  } catch (err) {
    const status = document.getElementById("status");
    status.dataset.state = "error";
    status.textContent = String(err.message || err);
    if (err.status === 401 || err.status === 403) {
      if (await devToken()) return poll();
      document.getElementById("token-form").hidden = false;
    }
    return;
  }
  devLoginTried = false; // a token that works now may be refused later (expired): try again then
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = document.getElementById("token-input").value.trim();
  localStorage.setItem("roomstream-token", token);
  document.getElementById("token-form").hidden = true;
  poll();
});

poll();
setInterval(poll, POLL_MS);
