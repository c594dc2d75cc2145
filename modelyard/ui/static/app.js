// modelyard's page script: local times, keyboard help, run selection, charts (plotly, loaded only
// on pages that draw one) and the few changes a page makes through the JSON API (with the CSRF header).
"use strict";

const body = document.body;
const ROOT = body.dataset.root || "";
const BASE = body.dataset.base || "";

// -- small helpers -------------------------------------------------------------------------------
function cookie(name) {
  const m = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
  return m ? decodeURIComponent(m[1]) : "";
}

async function api(method, path, payload) {
  const headers = { "Content-Type": "application/json" };
  const csrf = cookie("modelyard_csrf");
  if (csrf) headers["X-CSRF-Token"] = csrf;
  const res = await fetch(ROOT + path, { method, headers, credentials: "same-origin",
                                         body: payload === undefined ? undefined : JSON.stringify(payload) });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.message || res.status + " " + res.statusText);
  return data;
}

function json(id) {
  const el = document.getElementById(id);
  return el ? JSON.parse(el.textContent) : null;
}

function typing(target) {
  return target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
}

// -- times in the reader's zone --------------------------------------------------------------------
for (const t of document.querySelectorAll("time[datetime]")) {
  const d = new Date(t.getAttribute("datetime"));
  if (!isNaN(d)) { t.title = t.textContent; t.textContent = d.toLocaleString([], { dateStyle: "medium", timeStyle: "short" }); }
}

// -- forms and keys ----------------------------------------------------------------------------------
for (const el of document.querySelectorAll("[data-autosubmit]")) {
  el.addEventListener("change", () => el.form && el.form.submit());
}

document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === "/" && !typing(e.target)) {
    const box = document.querySelector('[data-hotkey="/"]');
    if (box) { e.preventDefault(); box.focus(); box.select(); }
    return;
  }
  if (e.key === "Escape") {
    for (const d of document.querySelectorAll("details.columns[open]")) d.open = false;
  }
  const table = e.target.closest && e.target.closest("table[data-keyboard-rows]");
  if (!table || typing(e.target) && e.target.type !== "checkbox") return;
  const rows = [...table.tBodies[0].rows].filter((r) => r.dataset.run);
  const row = e.target.closest("tr");
  const i = rows.indexOf(row);
  if (i < 0) return;
  const move = { ArrowDown: 1, j: 1, ArrowUp: -1, k: -1 }[e.key];
  if (move) {
    const next = rows[i + move];
    if (next) {
      e.preventDefault();
      const cells = [...row.cells];
      const col = cells.findIndex((c) => c.contains(e.target));
      const target = next.cells[col] && next.cells[col].querySelector("a, input") || next.querySelector("a");
      target.focus();
    }
  } else if (e.key === "x" && e.target.type !== "checkbox") {
    const box = row.querySelector("input[type=checkbox]");
    if (box) { box.click(); e.preventDefault(); }
  }
});

// -- selecting runs to compare -------------------------------------------------------------------------
const compareForm = document.getElementById("compare-form");
if (compareForm) {
  const boxes = [...document.querySelectorAll('input[type=checkbox][form="compare-form"]')];
  const button = compareForm.querySelector("[data-needs-selection]");
  const count = compareForm.querySelector("[data-selection-count]");
  const update = () => {
    const n = boxes.filter((b) => b.checked).length;
    button.disabled = n < 2 || n > 20;
    count.textContent = n ? `${n} selected` + (n > 20 ? " (at most 20)" : n < 2 ? " (select 2 or more)" : "") : "Select 2 to 20 runs";
    for (const b of boxes) b.closest("tr").classList.toggle("selected", b.checked);
  };
  for (const b of boxes) b.addEventListener("change", update);
  update();
}

// -- changes through the API (silences) ----------------------------------------------------------------
function report(message, isError) {
  const out = document.querySelector("[data-action-result]");
  if (out) { out.textContent = message; out.className = isError ? "error" : "hint"; }
  else if (isError) alert(message);
}

for (const button of document.querySelectorAll("[data-silence]")) {
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await api("POST", "/api/modelyard/v1/silences/create", JSON.parse(button.dataset.silence));
      location.reload();
    } catch (err) { report("Could not silence: " + err.message, true); button.disabled = false; }
  });
}
for (const button of document.querySelectorAll("[data-expire-silence]")) {
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await api("POST", "/api/modelyard/v1/silences/expire", { silence_id: button.dataset.expireSilence });
      location.reload();
    } catch (err) { report("Could not expire the silence: " + err.message, true); button.disabled = false; }
  });
}

// -- charts --------------------------------------------------------------------------------------------
let plotlyLoading = null;
function loadPlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!plotlyLoading) {
    plotlyLoading = new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = BASE + "/static/plotly.min.js";
      s.onload = () => resolve(window.Plotly);
      s.onerror = () => reject(new Error("the charting library did not load"));
      document.head.appendChild(s);
    });
  }
  return plotlyLoading;
}

function theme() {
  const css = getComputedStyle(document.documentElement);
  const v = (name) => css.getPropertyValue(name).trim();
  return {
    paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
    font: { color: v("--fg"), family: v("--font"), size: 12 },
    xaxis: { gridcolor: v("--border"), zerolinecolor: v("--border"), automargin: true },
    yaxis: { gridcolor: v("--border"), zerolinecolor: v("--border"), automargin: true },
    margin: { l: 50, r: 12, t: 10, b: 40 }, legend: { orientation: "h", y: -0.2 },
    colorway: ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"],
  };
}

const CONFIG = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d"] };
const drawn = [];  // [element, redraw()] for the theme switch

function plot(Plotly, el, traces, layout) {
  const base = theme();
  const merged = { ...base, ...layout, xaxis: { ...base.xaxis, ...(layout.xaxis || {}) },
                   yaxis: { ...base.yaxis, ...(layout.yaxis || {}) } };
  return Plotly.react(el, traces, merged, CONFIG);
}

function failed(el, err) {
  el.innerHTML = "";
  const p = document.createElement("p");
  p.className = "error";
  p.textContent = "Chart unavailable: " + err.message;
  el.appendChild(p);
}

function wire(v) {
  if (typeof v === "number") return v;
  if (v === "Infinity") return Infinity;
  if (v === "-Infinity") return -Infinity;
  return null;  // NaN
}

function smooth(values, weight) {
  if (!weight) return values;
  let last = 0, n = 0;
  return values.map((v) => {
    if (v === null || !isFinite(v)) return v;
    last = last * weight + (1 - weight) * v;
    n += 1;
    return last / (1 - Math.pow(weight, n));
  });
}

// Metric history: one chart per key, every run of #chart-runs overlaid.
async function metricCharts() {
  const els = [...document.querySelectorAll("[data-metric-chart]")];
  if (!els.length) return;
  const runs = json("chart-runs") || [];
  const controls = document.querySelector("[data-chart-controls]");
  const state = { log: false, smoothing: 0, x: "step" };
  const data = new Map();
  let Plotly;
  try { Plotly = await loadPlotly(); } catch (err) { els.forEach((el) => failed(el, err)); return; }

  const render = (el) => {
    const points = data.get(el);
    if (!points) return;
    const traces = [];
    runs.forEach((run, i) => {
      const mine = points.filter((p) => p.run_id === run.run_id);
      if (!mine.length) return;
      const t0 = mine[0].timestamp;
      const xs = mine.map((p) => state.x === "step" ? p.step : state.x === "relative" ? (p.timestamp - t0) / 1000 : new Date(p.timestamp));
      const ys = mine.map((p) => wire(p.value));
      const color = theme().colorway[i % 10];
      if (state.smoothing > 0) {
        traces.push({ x: xs, y: ys, mode: "lines", name: run.name + " (raw)", line: { color, width: 1 }, opacity: 0.25, showlegend: false, hoverinfo: "skip" });
      }
      traces.push({ x: xs, y: smooth(ys, state.smoothing), mode: mine.length > 1 ? "lines" : "markers", name: run.name, line: { color, width: 2 }, marker: { color } });
    });
    if (!traces.length) { el.textContent = "No values."; return; }
    plot(Plotly, el, traces, {
      showlegend: runs.length > 1,
      xaxis: { title: { text: { step: "step", relative: "seconds since the first value", wall: "" }[state.x] }, type: state.x === "wall" ? "date" : "linear" },
      yaxis: { type: state.log ? "log" : "linear" },
    });
  };

  const load = async (el) => {
    if (data.has(el) || el.dataset.loading) return;
    el.dataset.loading = "1";
    const q = new URLSearchParams({ metric_key: el.dataset.key, max_results: "1000" });
    for (const run of runs) q.append("run_ids", run.run_id);
    try {
      const res = await api("GET", "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval?" + q);
      data.set(el, res.metrics || []);
      render(el);
      el.dataset.drawn = "1";
    } catch (err) { failed(el, err); }
  };

  const seen = new IntersectionObserver((entries) => {
    for (const entry of entries) if (entry.isIntersecting) { load(entry.target); seen.unobserve(entry.target); }
  }, { rootMargin: "200px" });
  els.forEach((el) => seen.observe(el));
  drawn.push(() => els.forEach(render));

  if (controls) {
    const log = controls.querySelector("[data-log-scale]");
    const sm = controls.querySelector("[data-smoothing]");
    const smOut = controls.querySelector("[data-smoothing-value]");
    const x = controls.querySelector("[data-x-axis]");
    log.addEventListener("change", () => { state.log = log.checked; els.forEach(render); });
    sm.addEventListener("input", () => { state.smoothing = Number(sm.value); smOut.textContent = sm.value; els.forEach(render); });
    x.addEventListener("change", () => { state.x = x.value; els.forEach(render); });
  }
}

function fmt(v) {
  return Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(2) : String(Number(v.toPrecision(4)));
}

// Five stops of the viridis scale, interpolated: readable on light and dark backgrounds.
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
function viridis(t) {
  const x = Math.max(0, Math.min(1, t)) * (VIRIDIS.length - 1);
  const i = Math.min(Math.floor(x), VIRIDIS.length - 2), f = x - i;
  const c = VIRIDIS[i].map((a, k) => Math.round(a + (VIRIDIS[i + 1][k] - a) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

// Compare: parallel coordinates and a parameter-against-metric scatter.
async function compareCharts() {
  const data = json("compare-data");
  if (!data) return;
  const par = document.querySelector("[data-parcoords]");
  const sc = document.querySelector("[data-scatter]");
  let Plotly;
  try { Plotly = await loadPlotly(); } catch (err) { [par, sc].forEach((el) => failed(el, err)); return; }
  const names = data.runs.map((r) => r.name);
  const colorBy = document.querySelector("[data-parcoords-color]");
  const sx = document.querySelector("[data-scatter-x]");
  const sy = document.querySelector("[data-scatter-y]");

  const drawPar = () => {
    const dims = [];
    for (const k of data.numeric_params) dims.push({ label: k, values: data.params[k].map(Number) });
    for (const [k, vals] of Object.entries(data.metrics)) {
      if (vals.every((v) => v !== null && isFinite(v))) dims.push({ label: k, values: vals });
    }
    if (dims.length < 2) { par.textContent = "Parallel coordinates need two numeric parameters or metrics that every run has."; return; }
    const colour = colorBy && data.metrics[colorBy.value] && data.metrics[colorBy.value].every((v) => v !== null)
      ? data.metrics[colorBy.value] : dims[dims.length - 1].values;
    // Drawn with plain SVG lines (plotly's parcoords needs WebGL, which many browsers lack): each
    // axis is scaled to its own range, each run is a line across the axes coloured by a metric.
    const scaled = dims.map((d) => {
      const lo = Math.min(...d.values), hi = Math.max(...d.values);
      return { ...d, lo, hi, at: (v) => hi > lo ? (v - lo) / (hi - lo) : 0.5 };
    });
    const cLo = Math.min(...colour), cHi = Math.max(...colour);
    const traces = data.runs.map((run, i) => ({
      type: "scatter", mode: "lines+markers", name: run.name, x: scaled.map((_, j) => j),
      y: scaled.map((d) => d.at(d.values[i])), customdata: scaled.map((d) => d.values[i]),
      hovertemplate: "%{text}: %{customdata}<extra>" + run.name + "</extra>", text: scaled.map((d) => d.label),
      line: { width: 2, color: viridis(cHi > cLo ? (colour[i] - cLo) / (cHi - cLo) : 0.5) }, marker: { size: 6 },
    }));
    const notes = [];
    scaled.forEach((d, j) => {
      notes.push({ x: j, y: 1.08, text: "<b>" + d.label + "</b>", showarrow: false, xanchor: "center" });
      notes.push({ x: j, y: -0.08, text: fmt(d.lo), showarrow: false, font: { size: 10 } });
      notes.push({ x: j, y: 1.0, text: fmt(d.hi), showarrow: false, xanchor: "left", xshift: 4, font: { size: 10 } });
    });
    plot(Plotly, par, traces, {
      showlegend: true, annotations: notes, margin: { l: 30, r: 30, t: 40, b: 30 },
      xaxis: { showgrid: false, zeroline: false, showticklabels: false, range: [-0.3, scaled.length - 0.7] },
      yaxis: { showgrid: false, zeroline: false, showticklabels: false, range: [-0.15, 1.15] },
      shapes: scaled.map((_, j) => ({ type: "line", x0: j, x1: j, y0: 0, y1: 1, line: { color: theme().font.color, width: 1 } })),
    });
    par.dataset.drawn = "1";
  };
  const drawScatter = () => {
    if (!sx || !sy || !sx.value || !sy.value) { sc.textContent = "Needs a parameter and a metric."; return; }
    const xs = data.params[sx.value];
    const numeric = data.numeric_params.includes(sx.value);
    plot(Plotly, sc, [{ x: numeric ? xs.map(Number) : xs.map((v) => v === null ? "—" : v), y: data.metrics[sy.value],
                        text: names, mode: "markers+text", textposition: "top center", type: "scatter",
                        marker: { size: 11 } }],
         { xaxis: { title: { text: sx.value }, type: numeric ? "linear" : "category" }, yaxis: { title: { text: sy.value } } });
    sc.dataset.drawn = "1";
  };
  drawPar();
  drawScatter();
  drawn.push(drawPar, drawScatter);
  colorBy && colorBy.addEventListener("change", drawPar);
  sx && sx.addEventListener("change", drawScatter);
  sy && sy.addEventListener("change", drawScatter);
}

// Deployment: the monitors' series, refreshed every 30 s from GET /monitors/series.
const GROUPS = [
  { title: "Request rate (predictions/s)", metrics: ["traffic_per_second"] },
  { title: "Latency (ms)", metrics: ["latency_p50_seconds", "latency_p90_seconds", "latency_p99_seconds"], scale: 1000 },
  { title: "Error rate (%)", metrics: ["error_rate"], scale: 100 },
  { title: "Drift score per feature", metrics: ["drift_score"], byFeature: true },
  { title: "Drifted features (share)", metrics: ["drift_share"] },
  { title: "Prediction drift", metrics: ["prediction_drift_score"], byFeature: true },
  { title: "Performance", metrics: ["accuracy", "precision", "recall", "f1", "roc_auc", "r2"] },
  { title: "Error (regression)", metrics: ["mae", "rmse", "log_loss"] },
  { title: "Labels arrived (%)", metrics: ["label_ratio"], scale: 100 },
  { title: "Missing values per feature (share)", metrics: ["null_ratio"], byFeature: true },
];

async function monitorCharts() {
  const source = document.getElementById("monitor-series");
  const holder = document.querySelector("[data-monitor-charts]");
  if (!source || !holder) return;
  let monitors = JSON.parse(source.textContent);
  if (!monitors.length) return;
  const start = Number(source.dataset.start);
  let Plotly;
  try { Plotly = await loadPlotly(); } catch (err) { failed(holder, err); return; }
  const cards = new Map();

  const draw = () => {
    for (const mon of monitors) {
      for (const g of GROUPS) {
        const series = mon.series.filter((s) => g.metrics.includes(s.metric));
        if (!series.length) continue;
        const id = mon.name + "/" + g.title;
        let el = cards.get(id);
        if (!el) {
          const card = document.createElement("section");
          card.className = "card chart-card";
          const h = document.createElement("h3");
          h.textContent = g.title + (monitors.length > 1 ? " · " + mon.name : "");
          el = document.createElement("div");
          el.className = "chart";
          el.setAttribute("role", "img");
          el.setAttribute("aria-label", h.textContent);
          el.dataset.series = g.metrics[0];
          card.append(h, el);
          holder.appendChild(card);
          cards.set(id, el);
        }
        const traces = series.map((s) => ({
          x: s.points.map((p) => new Date(p[0])), y: s.points.map((p) => p[1] * (g.scale || 1)),
          mode: s.points.length > 1 ? "lines+markers" : "markers", marker: { size: 5 },
          name: g.byFeature ? s.feature : s.metric.replace(/_seconds$/, "").replace(/_/g, " "),
        }));
        plot(Plotly, el, traces, { xaxis: { type: "date" }, showlegend: traces.length > 1 });
        el.dataset.drawn = "1";
      }
    }
  };
  draw();
  drawn.push(draw);

  const status = document.querySelector("[data-live-status]");
  setInterval(async () => {
    if (document.hidden) return;
    try {
      monitors = await Promise.all(monitors.map(async (m) => {
        const q = new URLSearchParams({ name: m.name, start_ms: String(start), max_results: "10000" });
        const res = await api("GET", "/api/modelyard/v1/monitors/series?" + q);
        return { name: m.name, series: res.series || [] };
      }));
      draw();
      if (status) status.textContent = "Updated " + new Date().toLocaleTimeString();
    } catch (err) { if (status) status.textContent = "Refresh failed: " + err.message; }
  }, 30000);
}

// Drift: reference and current distributions of each feature, side by side.
async function histograms() {
  const els = [...document.querySelectorAll("[data-histogram]")];
  const cols = json("drift-data");
  if (!els.length || !cols) return;
  let Plotly;
  try { Plotly = await loadPlotly(); } catch (err) { els.forEach((el) => failed(el, err)); return; }
  const draw = () => {
    for (const el of els) {
      const h = cols[Number(el.dataset.histogram)].histogram || {};
      if (!h.reference) { el.textContent = "No histogram for this feature."; continue; }
      let x;
      if (h.type === "numeric") {
        x = h.reference.map((_, i) => (h.edges[i] + h.edges[i + 1]) / 2);
      } else {
        x = h.labels;
      }
      const pct = (a) => a.map((v) => v * 100);
      plot(Plotly, el, [
        { type: "bar", x, y: pct(h.reference), name: "reference", opacity: 0.85 },
        { type: "bar", x, y: pct(h.current), name: "current", opacity: 0.85 },
      ], { barmode: "group", bargap: 0.1, yaxis: { title: { text: "% of rows" } },
           xaxis: { type: h.type === "numeric" ? "linear" : "category" }, showlegend: true });
      el.dataset.drawn = "1";
    }
  };
  draw();
  drawn.push(draw);
}

metricCharts();
compareCharts();
monitorCharts();
histograms();

window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => drawn.forEach((f) => f()));
