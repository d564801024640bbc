// arus dashboard: fetch /api/state (arus/ops/dashboard.py) every REFRESH_MS and redraw the page.
// Cells are filled with textContent, never HTML: topic names and metrics come from outside.
"use strict";

const REFRESH_MS = 3000;

function shown(value) {
  return value === null || value === undefined ? "n/a" : String(value);
}

function row(cells, attrs = {}) {
  const tr = document.createElement("tr");
  for (const [name, value] of Object.entries(attrs)) tr.setAttribute(name, value);
  for (const [key, value] of cells) {
    const td = document.createElement("td");
    td.className = key;
    td.textContent = shown(value);
    tr.appendChild(td);
  }
  return tr;
}

// One bold line per reader with its total lag, then one line per partition.
function readerRows(body, kind, name, total, extra, partitions) {
  body.appendChild(row([["name", name], ["partition", ""], ["end", ""], ["offset", ""], ["lag", total], ...extra],
    { class: "reader", [`data-${kind}`]: name }));
  for (const p of partitions) {
    body.appendChild(row(
      [["topic", p.topic], ["partition", p.partition], ["end", p.end], ["offset", p.offset], ["lag", p.lag]],
      { [`data-${kind}`]: name, "data-partition": `${p.topic}:${p.partition}` }));
  }
}

function drawLag(lag) {
  const queries = document.querySelector("#queries tbody");
  const groups = document.querySelector("#groups tbody");
  queries.replaceChildren();
  groups.replaceChildren();
  if (!lag) return;
  document.getElementById("broker").textContent = `from the broker at ${lag.bootstrap_servers}`;
  for (const q of lag.queries) {
    readerRows(queries, "query", q.name, q.lag, [["last_batch", q.last_batch], ["last_batch_at", q.last_batch_at],
      ["watermark", q.watermark], ["in_flight_batch", q.in_flight_batch], ["late", q.late],
      ["dead_letters", q.dead_letters]], q.partitions);
  }
  for (const g of lag.groups) {
    readerRows(groups, "group", g.group, g.lag, [["state", g.state]], g.partitions);
  }
}

function drawMetrics(lines) {
  const body = document.querySelector("#metrics tbody");
  body.replaceChildren();
  const fields = ["app", "query", "source", "time", "batch_id", "input_rows_per_s", "processed_rows_per_s",
    "batch_duration_ms", "rows", "watermark", "state_rows", "state_memory_bytes", "late", "dead_letters"];
  for (const m of lines) {
    const lag = m.lag ? Object.values(m.lag).reduce((a, b) => a + b, 0) : null;
    body.appendChild(row([...fields.map((f) => [f, m[f]]), ["lag", lag]], { "data-app": m.app, "data-query": m.query }));
  }
}

function drawGold(gold) {
  document.getElementById("gold-rows").textContent = gold ? gold.rows : "n/a (no table yet)";
  const head = document.querySelector("#newest thead tr");
  const body = document.querySelector("#newest tbody");
  body.replaceChildren();
  if (!gold) return;
  const columns = [...gold.keys, "window_start", "count", gold.field];
  head.replaceChildren(...columns.map((c) => Object.assign(document.createElement("th"), { textContent: c })));
  // The table under the chart: the newest window's rows, the figures a reader checks by eye.
  const newest = gold.windows.length ? gold.windows[gold.windows.length - 1].window_start : null;
  for (const w of gold.windows.filter((w) => w.window_start === newest)) {
    body.appendChild(row(columns.map((c) => [c, w[c]]), { "data-key": gold.keys.map((k) => w[k]).join("|") }));
  }
  // One line per key: its mean in each of the newest windows.
  const traces = new Map();
  for (const w of gold.windows) {
    const key = gold.keys.map((k) => w[k]).join(" ");
    if (!traces.has(key)) traces.set(key, { x: [], y: [], name: key, mode: "lines+markers", type: "scatter" });
    traces.get(key).x.push(w.window_start);
    traces.get(key).y.push(w[gold.field]);
  }
  Plotly.react("plot", [...traces.values()], {
    margin: { t: 20, r: 20, b: 40, l: 60 },
    xaxis: { title: { text: "window start (UTC)" } },
    yaxis: { title: { text: gold.field } },
  }, { displaylogo: false, responsive: true });
}

async function refresh() {
  try {
    const state = await (await fetch("/api/state")).json();
    document.getElementById("at").textContent = state.at;
    document.getElementById("metrics-dir").textContent = state.metrics_dir;
    document.getElementById("gold-table").textContent = state.gold_table;
    const error = document.getElementById("lag-error");
    error.hidden = !state.lag_error;
    error.textContent = state.lag_error ? `lag unavailable: ${state.lag_error}` : "";
    drawLag(state.lag);
    drawMetrics(state.metrics);
    drawGold(state.gold);
  } catch (exc) {
    document.getElementById("at").textContent = `failed (${exc}); retrying`;
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
