// lepton-fed dashboard: polls the dashboard's JSON API and draws SVG charts.
// Written for this package; no third-party code, no network but the page's own server.
(() => {
  "use strict";

  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#1f5fbf", "#c2410c", "#2e7d32", "#7b1fa2", "#00838f", "#ad1457",
    "#5d4037", "#455a64", "#9e9d24", "#283593"];
  const MAX_LEGEND = 12;
  const MAX_MARKERS = 300;

  const state = {
    runs: [], sweep: false, run: null, rows: [], next: 0, summary: null, meta: {},
    ageS: null, pollMs: 1000, tick: 0, statementKey: null, table: [],
  };
  // read by the browser tests and by whoever measures the page
  window.__lf = { firstChartMs: null, renders: 0, rounds: 0 };

  // ------------------------------------------------------------------ helpers
  function svg(tag, attrs, parent) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (parent) parent.appendChild(e);
    return e;
  }

  function html(tag, text, parent, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    if (parent) parent.appendChild(e);
    return e;
  }

  function isNum(v) { return typeof v === "number" && isFinite(v); }

  function fmt(v, digits) {
    if (!isNum(v)) return v === null || v === undefined ? "" : String(v);
    if (Number.isInteger(v) && Math.abs(v) >= 1000) return v.toLocaleString("en-US");
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(2);
    return String(+v.toFixed(digits === undefined ? 4 : digits));
  }

  function fmtBytes(v) {
    if (!isNum(v)) return "";
    const u = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (Math.abs(v) >= 1000 && i < u.length - 1) { v /= 1000; i += 1; }
    return `${+v.toFixed(v < 10 ? 2 : 1)} ${u[i]}`;
  }

  function fmtSecs(v) {
    if (!isNum(v)) return "";
    if (v < 1) return `${Math.round(v * 1000)} ms`;
    if (v < 120) return `${+v.toFixed(1)} s`;
    return `${Math.floor(v / 60)} min ${Math.round(v % 60)} s`;
  }

  function ticks(lo, hi, n) {
    if (!(hi > lo)) { hi = lo + 1; }
    const raw = (hi - lo) / n;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
    const out = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(+t.toFixed(12));
    return out;
  }

  async function getJSON(url) {
    const r = await fetch(url, { cache: "no-store" });
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
    return r.json();
  }

  // ------------------------------------------------------------------ charts
  // opts: {series: [{name, color, points: [[x, y]], dash, kind: "line"|"bar"}],
  //        xMax, yMin, yMax, yFmt, budget: {y, label}, empty}
  function chart(container, opts) {
    container.textContent = "";
    const series = opts.series.filter((s) => s.points.length > 0);
    if (series.length === 0) {
      html("div", opts.empty || "no data yet", container, "empty");
      return;
    }
    const W = Math.max(360, Math.round(container.clientWidth || 560)), H = opts.height || 230;
    const L = 56, R = 14, T = 12, B = 30;
    const pw = W - L - R, ph = H - T - B;
    let xMax = opts.xMax || 1, yMin = opts.yMin, yMax = opts.yMax;
    const ys = [];
    const stacks = {};
    for (const s of series) {
      for (const [x, y] of s.points) {
        xMax = Math.max(xMax, x);
        if (s.kind === "bar") stacks[x] = (stacks[x] || 0) + y; else ys.push(y);
      }
    }
    for (const v of Object.values(stacks)) ys.push(v);
    if (opts.budget && isNum(opts.budget.y)) ys.push(opts.budget.y);
    if (yMin === undefined) yMin = Math.min(0, ...ys);
    if (yMax === undefined) yMax = Math.max(...ys);
    if (!(yMax > yMin)) yMax = yMin + (Math.abs(yMin) || 1);
    yMax += (yMax - yMin) * 0.05;
    const sx = (x) => L + ((x - 0.5) / xMax) * pw;
    const sy = (y) => T + ph - ((y - yMin) / (yMax - yMin)) * ph;
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.title || "chart" });
    const yFmt = opts.yFmt || ((v) => fmt(v, 3));
    for (const t of ticks(yMin, yMax, 5)) {
      if (t < yMin || t > yMax) continue;
      svg("line", { x1: L, x2: W - R, y1: sy(t), y2: sy(t), class: "grid" }, root);
      svg("text", { x: L - 6, y: sy(t) + 4, "text-anchor": "end" }, root).textContent = yFmt(t);
    }
    const xt = ticks(1, xMax, Math.min(10, xMax)).filter((t) => Number.isInteger(t) && t >= 1);
    for (const t of xt) {
      svg("text", { x: sx(t), y: H - B + 16, "text-anchor": "middle" }, root).textContent = String(t);
    }
    svg("text", { x: W - R, y: H - 2, "text-anchor": "end" }, root).textContent = "round";
    svg("line", { x1: L, x2: W - R, y1: T + ph, y2: T + ph, class: "axis" }, root);
    svg("line", { x1: L, x2: L, y1: T, y2: T + ph, class: "axis" }, root);
    // stacked bars
    const base = {};
    const bw = Math.max(2, (pw / xMax) * 0.7);
    for (const s of series.filter((q) => q.kind === "bar")) {
      const g = svg("g", { "data-series": s.name }, root);
      for (const [x, y] of s.points) {
        const b0 = base[x] || 0;
        base[x] = b0 + y;
        if (y <= 0) continue;
        const r = svg("rect", { x: sx(x) - bw / 2, y: sy(b0 + y), width: bw,
          height: Math.max(0.5, sy(b0) - sy(b0 + y)), fill: s.color, class: "pt bar",
          "data-round": x }, g);
        svg("title", {}, r).textContent = `round ${x}: ${s.name} ${yFmt(y)}`;
      }
    }
    // lines
    for (const s of series.filter((q) => q.kind !== "bar")) {
      const g = svg("g", { "data-series": s.name }, root);
      const pts = s.points.slice().sort((a, b) => a[0] - b[0]);
      if (pts.length > 1) {
        svg("polyline", { points: pts.map(([x, y]) => `${sx(x)},${sy(y)}`).join(" "),
          fill: "none", stroke: s.color, "stroke-width": 2,
          "stroke-dasharray": s.dash ? "6 4" : "none" }, g);
      }
      if (pts.length <= MAX_MARKERS) {
        for (const [x, y] of pts) {
          const c = svg("circle", { cx: sx(x), cy: sy(y), r: 3, fill: s.color, class: "pt",
            "data-round": x }, g);
          svg("title", {}, c).textContent = `round ${x}: ${s.name} ${yFmt(y)}`;
        }
      }
    }
    if (opts.budget && isNum(opts.budget.y)) {
      svg("line", { x1: L, x2: W - R, y1: sy(opts.budget.y), y2: sy(opts.budget.y), class: "budget" }, root);
      svg("text", { x: W - R - 4, y: sy(opts.budget.y) - 4, "text-anchor": "end", class: "budget-label" },
        root).textContent = opts.budget.label;
    }
    // legend (HTML, so that it wraps)
    const legend = html("div", null, container, "legend");
    const shown = series.slice(0, MAX_LEGEND);
    for (const s of shown) {
      const item = html("span", null, legend);
      const sw = html("i", null, item, s.dash ? "dash" : "");
      sw.style.background = s.color;
      item.appendChild(document.createTextNode(s.name));
    }
    if (series.length > shown.length) html("span", `+${series.length - shown.length} more`, legend);
    container.appendChild(root);
    if (window.__lf.firstChartMs === null) window.__lf.firstChartMs = performance.now();
  }

  function pts(rows, get) {
    const out = [];
    for (const r of rows) {
      const v = get(r);
      if (isNum(v) && isNum(r.round)) out.push([r.round, v]);
    }
    return out;
  }

  // ------------------------------------------------------------------ the run view
  function xMax() {
    const planned = state.meta.rounds_planned;
    const last = state.rows.length ? state.rows[state.rows.length - 1].round : 0;
    return Math.max(isNum(planned) ? planned : 1, isNum(last) ? last : 1);
  }

  function epsilonSeries() {
    const rows = state.rows;
    const names = new Set();
    for (const r of rows) for (const k of Object.keys(r.epsilon_per_node || {})) names.add(k);
    const series = [...names].sort().map((n, i) => ({
      name: n, color: PALETTE[i % PALETTE.length],
      points: pts(rows, (r) => (r.epsilon_per_node || {})[n]) }));
    const perClient = ((state.summary || {}).privacy || {}).per_client || {};
    if (series.length === 0 && Object.keys(perClient).length) {
      const at = state.summary.rounds_completed || xMax();
      Object.keys(perClient).sort().forEach((n, i) => series.push({
        name: n, color: PALETTE[(i + 1) % PALETTE.length], points: isNum(perClient[n]) ? [[at, perClient[n]]] : [] }));
    }
    const maxName = state.meta.privacy === "central" ? "epsilon (central)" : "max over nodes";
    series.unshift({ name: maxName, color: "#101828", dash: true, points: pts(rows, (r) => r.epsilon) });
    return series;
  }

  function drawRun() {
    const rows = state.rows, X = xMax();
    chart(document.getElementById("chart-acc"), { xMax: X, yMin: 0, yMax: 1, series: [
      { name: "accuracy", color: PALETTE[0], points: pts(rows, (r) => r.accuracy) },
      { name: "AUC", color: PALETTE[1], points: pts(rows, (r) => r.auc) },
      { name: "federated accuracy", color: PALETTE[2], dash: true,
        points: pts(rows, (r) => (r.federated || {}).accuracy) }] });
    chart(document.getElementById("chart-loss"), { xMax: X, series: [
      { name: "loss", color: PALETTE[0], points: pts(rows, (r) => r.loss) },
      { name: "federated loss", color: PALETTE[2], dash: true,
        points: pts(rows, (r) => (r.federated || {}).loss) }] });
    const target = state.meta.epsilon_target;
    chart(document.getElementById("chart-eps"), {
      xMax: X, yMin: 0, series: state.meta.privacy === "none" ? [] : epsilonSeries(),
      budget: isNum(target) ? { y: target, label: `budget ε = ${fmt(target)}` } : null,
      empty: state.meta.privacy === "none" ? "no differential privacy in this run" : "no epsilon yet" });
    chart(document.getElementById("chart-part"), { xMax: X, yMin: 0, yFmt: (v) => fmt(v, 1), series: [
      { name: "replied", color: "#2e7d32", kind: "bar", points: pts(rows, (r) => r.clients) },
      { name: "declined", color: "#b26a00", kind: "bar", points: pts(rows, (r) => r.declined) },
      { name: "failed", color: "#c62828", kind: "bar", points: pts(rows, (r) => r.failed) },
      { name: "sampled", color: "#101828", dash: true, points: pts(rows, (r) => r.sampled) }] });
    chart(document.getElementById("chart-bytes"), { xMax: X, yMin: 0, yFmt: fmtBytes, series: [
      { name: "up (nodes to server)", color: PALETTE[0], points: pts(rows, (r) => r.bytes_up) },
      { name: "down", color: PALETTE[1], points: pts(rows, (r) => r.bytes_down) }] });
    chart(document.getElementById("chart-time"), { xMax: X, yMin: 0, yFmt: fmtSecs, series: [
      { name: "round seconds", color: PALETTE[3], points: pts(rows, (r) => r.seconds) }] });
    drawFacts();
    drawNodes();
    window.__lf.renders += 1;
    window.__lf.rounds = rows.length;
  }

  function drawFacts() {
    const m = state.meta, s = state.summary, rows = state.rows;
    const last = rows.length ? rows[rows.length - 1] : {};
    const facts = [
      ["data", m.data], ["model", m.model], ["strategy", m.strategy],
      ["privacy", m.privacy + (isNum(m.epsilon_target) ? ` (ε ≤ ${fmt(m.epsilon_target)}, δ ${fmt(m.delta)})` : "")],
      ["secure aggregation", m.secagg ? "on" : "off"],
      ["nodes", isNum(m.num_clients) ? `${m.num_clients} (${m.clients_per_round} per round)` : ""],
      ["accuracy", fmt(s && s.final ? s.final.accuracy : last.accuracy)],
      ["epsilon", fmt(s && s.privacy ? s.privacy.epsilon : last.epsilon)],
      ["bytes up", fmtBytes(rows.reduce((a, r) => a + (r.bytes_up || 0), 0))],
    ];
    if (s) facts.push(["wall time", fmtSecs(s.wall_seconds)]);
    if (s && s.stopped) facts.push(["stopped", s.stopped]);
    const box = document.getElementById("facts");
    box.textContent = "";
    for (const [k, v] of facts) {
      if (v === undefined || v === null || v === "" || v === "undefined") continue;
      const d = html("div", null, box);
      html("b", k, d);
      d.appendChild(document.createTextNode(String(v)));
    }
  }

  function drawNodes() {
    const table = document.getElementById("nodes");
    table.textContent = "";
    const s = state.summary || {};
    const nodes = s.nodes || {};
    const priv = s.privacy || {};
    const lastEps = {};
    for (const r of state.rows) Object.assign(lastEps, r.epsilon_per_node || {});
    const eps = Object.assign({}, lastEps, priv.per_client || {});
    const names = new Set([...(nodes.names || []), ...Object.keys(eps)]);
    if (names.size === 0) {
      html("caption", "per-node figures appear with the first epsilon report or at the end of the run", table);
      return;
    }
    const target = state.meta.epsilon_target;
    const head = html("tr", null, html("thead", null, table));
    for (const c of ["node", "epsilon", "budget used", "declines", "failures", "status"]) {
      html("th", c, head, c === "epsilon" || c === "budget used" ? "num" : "");
    }
    const body = html("tbody", null, table);
    const counts = (d) => Object.entries(d || {}).map(([k, v]) => `${k} ×${v}`).join(", ");
    for (const n of [...names].sort()) {
      const tr = html("tr", null, body);
      html("td", n, tr);
      html("td", fmt(eps[n]), tr, "num");
      html("td", isNum(eps[n]) && isNum(target) ? `${Math.round((100 * eps[n]) / target)} %` : "", tr, "num");
      html("td", counts((nodes.declines || {})[n]), tr);
      html("td", counts((nodes.failures || {})[n]), tr);
      const refused = (nodes.refused || {})[n];
      const stopped = (priv.stopped_clients || {})[n];
      html("td", refused ? `refused: ${refused}` : isNum(stopped) ? `budget exhausted at round ${stopped}` : "", tr);
    }
  }

  function setStatus() {
    const pill = document.getElementById("status");
    const rows = state.rows;
    let cls = "running", text = "running";
    if (state.summary) { cls = "finished"; text = "finished"; }
    else if (rows.length === 0) { cls = ""; text = "waiting for round 1"; }
    else {
      const secs = rows.map((r) => r.seconds).filter(isNum).sort((a, b) => a - b);
      const typical = secs.length ? secs[Math.floor(secs.length / 2)] : 1;
      if (isNum(state.ageS) && state.ageS > Math.max(60, 10 * typical)) {
        cls = "stalled"; text = `no new round for ${fmtSecs(state.ageS)}`;
      }
    }
    pill.className = `pill ${cls}`;
    pill.textContent = text;
    const last = rows.length ? rows[rows.length - 1].round : 0;
    document.getElementById("progress").textContent =
      `round ${last}${isNum(state.meta.rounds_planned) ? " / " + state.meta.rounds_planned : ""}`;
    document.getElementById("run-title").textContent =
      state.sweep ? `${state.root} / ${state.run}` : (state.root || "");
    const heading = document.getElementById("run-heading");
    heading.hidden = !state.sweep;
    heading.textContent = `Run ${state.run}`;
  }

  async function loadStatement() {
    const key = `${state.run}|${state.rows.length}|${state.summary ? "done" : "live"}`;
    if (state.statementKey === key) return;
    state.statementKey = key;
    const pre = document.getElementById("statement");
    try {
      const r = await fetch(`/api/statement?run=${encodeURIComponent(state.run)}`, { cache: "no-store" });
      const data = await r.json();
      pre.textContent = data.text || data.error || "";
    } catch (e) {
      state.statementKey = null;
    }
  }

  // ------------------------------------------------------------------ the sweep view
  const COLS = ["job", "overrides", "rounds", "accuracy", "loss", "auc", "epsilon", "privacy",
    "secagg", "bytes_up", "wall_seconds"];

  function drawSweepTable() {
    const table = document.getElementById("sweep-table");
    table.textContent = "";
    const head = html("tr", null, html("thead", null, table));
    for (const c of COLS) html("th", c, head);
    html("th", "status", head);
    const body = html("tbody", null, table);
    for (const r of state.table) {
      const tr = html("tr", null, body, "clickable" + (r.id === state.run ? " selected" : ""));
      tr.dataset.run = r.id;
      for (const c of COLS) {
        const v = r[c];
        html("td", c === "bytes_up" ? fmtBytes(v) : isNum(v) ? fmt(v) : v === null ? "" : String(v), tr,
          isNum(v) ? "num" : "");
      }
      html("td", r.finished ? "finished" : `running (${r.rounds}/${r.planned ?? "?"})`, tr);
      tr.addEventListener("click", () => selectRun(r.id));
    }
  }

  async function drawSweepChart() {
    const data = await getJSON("/api/series?key=accuracy");
    const ids = Object.keys(data);
    let X = 1;
    for (const r of state.table) if (isNum(r.planned)) X = Math.max(X, r.planned);
    const label = (id) => {
      const row = state.table.find((t) => t.id === id);
      return ((row && row.overrides) || id).slice(0, 40);
    };
    chart(document.getElementById("chart-sweep"), { xMax: X, yMin: 0, yMax: 1, height: 280, series: ids.map((id, i) => ({
      name: label(id), color: PALETTE[i % PALETTE.length], points: data[id].filter((p) => isNum(p[1])) })) });
  }

  // ------------------------------------------------------------------ polling
  function selectRun(id) {
    if (id === state.run) return;
    state.run = id;
    state.rows = []; state.next = 0; state.summary = null; state.meta = {};
    state.statementKey = null;
    if (state.sweep) history.replaceState(null, "", `#run=${encodeURIComponent(id)}`);
    drawSweepTable();
    drawRun();
  }

  async function refreshRuns() {
    const data = await getJSON("/api/runs");
    state.root = data.root; state.sweep = data.sweep; state.runs = data.runs;
    state.pollMs = data.poll_ms || 1000; state.table = data.table || [];
    document.getElementById("poll").textContent = String(state.pollMs);
    document.getElementById("sweep").hidden = !state.sweep;
    if (!state.run || !state.runs.includes(state.run)) {
      const fromHash = decodeURIComponent((location.hash.match(/run=([^&]+)/) || [])[1] || "");
      const running = state.table.find((r) => !r.finished);
      const pick = state.runs.includes(fromHash) ? fromHash
        : running ? running.id : state.runs[state.runs.length - 1];
      if (pick !== undefined) selectRun(pick);
    }
    if (state.sweep) { drawSweepTable(); await drawSweepChart(); }
  }

  async function refreshRun() {
    if (state.run === null) return;
    const data = await getJSON(`/api/run?run=${encodeURIComponent(state.run)}&since=${state.next}`);
    if (data.id !== state.run) return;
    let changed = false;
    if (data.next < state.next) {  // the file was rewritten (a new run in this directory)
      state.rows = []; state.next = 0; state.summary = null; state.statementKey = null;
      return refreshRun();
    }
    if (data.rows.length) { state.rows = state.rows.concat(data.rows); changed = true; }
    state.next = data.next;
    if (JSON.stringify(data.meta) !== JSON.stringify(state.meta)) { state.meta = data.meta; changed = true; }
    if ((data.summary === null) !== (state.summary === null)) changed = true;
    state.summary = data.summary;
    state.ageS = data.age_s;
    if (changed || window.__lf.renders === 0) drawRun();
    setStatus();
    if (Object.keys(state.meta).length) await loadStatement();
  }

  async function loop() {
    try {
      if (state.tick % 5 === 0 || state.run === null) await refreshRuns();
      await refreshRun();
    } catch (e) {
      const pill = document.getElementById("status");
      pill.className = "pill stalled";
      pill.textContent = "dashboard server unreachable";
    }
    state.tick += 1;
    setTimeout(loop, state.pollMs);
  }

  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      drawRun();
      if (state.sweep) drawSweepChart().catch(() => {});
    }, 200);
  });
  document.addEventListener("DOMContentLoaded", loop);
})();
