// hxp-events live dashboard: polls the service's own JSON endpoints (same
// origin) and draws the charts on <canvas> by hand. No dependencies.
// Query parameters: ?interval=MS (poll period, default 1500), ?points=N
// (points kept per chart, default 120).
(function () {
  "use strict";

  const params = new URLSearchParams(location.search);
  const INTERVAL = Math.max(250, Number(params.get("interval")) || 1500);
  const MAX_POINTS = Math.max(2, Number(params.get("points")) || 120);
  const COLORS = ["#4e9af1", "#f5a623", "#e0245e", "#17bf63", "#9b6bdf"];
  const $ = (id) => document.getElementById(id);

  // ---- helpers -------------------------------------------------------------
  function fmt(v, digits) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    const n = Number(v);
    if (!Number.isFinite(n)) return "–";
    if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(2) + "M";
    if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + "k";
    return n.toFixed(digits === undefined ? 1 : digits);
  }
  function clock(d) {
    return d.toTimeString().slice(0, 8);
  }
  function shortTime(rfc3339) {
    if (!rfc3339) return "–";
    const d = new Date(rfc3339);
    return Number.isNaN(d.getTime()) ? String(rfc3339) : clock(d);
  }
  function setText(id, text) {
    const el = $(id);
    if (el) el.textContent = text;
  }
  // Replace a table's body with rows of cells (text only: no HTML from the API).
  function fillTable(id, rows, emptyText) {
    const body = $(id).tBodies[0];
    const cols = $(id).tHead.rows[0].cells.length;
    body.replaceChildren();
    if (!rows.length) {
      const tr = body.insertRow();
      const td = tr.insertCell();
      td.colSpan = cols;
      td.className = "empty";
      td.textContent = emptyText;
      return;
    }
    for (const r of rows) {
      const tr = body.insertRow();
      for (const c of r.cells) {
        const td = tr.insertCell();
        td.textContent = c === null || c === undefined ? "–" : String(c);
      }
      if (r.className) tr.className = r.className;
    }
  }
  async function getJson(path) {
    const r = await fetch(path, { cache: "no-store", headers: { Accept: "application/json" } });
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return r.json();
  }
  async function getText(path) {
    const r = await fetch(path, { cache: "no-store" });
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return r.text();
  }

  // ---- Prometheus text format: the few series the charts need --------------
  function parseMetrics(text) {
    const out = { processed: 0, failed: 0, buckets: [] };
    for (const line of text.split("\n")) {
      if (!line || line[0] === "#") continue;
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
      if (!m) continue;
      const name = m[1], labels = m[2] || "", value = Number(m[3]);
      if (name === "event_processing_total") {
        if (labels.includes('status="processed"')) out.processed += value;
        else if (labels.includes('status="failed"')) out.failed += value;
      } else if (name === "event_processing_duration_seconds_bucket") {
        const le = /le="([^"]+)"/.exec(labels);
        if (le) out.buckets.push([le[1] === "+Inf" ? Infinity : Number(le[1]), value]);
      }
    }
    out.buckets.sort((a, b) => a[0] - b[0]);
    return out;
  }
  // Quantile of the observations between two scrapes of a cumulative
  // histogram (as PromQL's histogram_quantile over a rate), in seconds.
  function histogramQuantile(q, prev, cur) {
    if (!prev || prev.length !== cur.length) return null;
    const d = cur.map((b, i) => [b[0], b[1] - prev[i][1]]);
    const total = d.length ? d[d.length - 1][1] : 0;
    if (total <= 0) return null;
    const rank = q * total;
    let lowerBound = 0, lowerCount = 0;
    for (const [le, count] of d) {
      if (count >= rank) {
        if (le === Infinity) return lowerBound;
        return lowerBound + (le - lowerBound) * ((rank - lowerCount) / Math.max(count - lowerCount, 1e-12));
      }
      lowerBound = le;
      lowerCount = count;
    }
    return lowerBound;
  }

  // ---- line charts on canvas ----------------------------------------------
  class LineChart {
    constructor(canvas, series) {
      this.canvas = canvas;
      this.series = series.map((s, i) => ({ name: s, color: COLORS[i % COLORS.length], points: [] }));
    }
    push(t, values) {
      this.series.forEach((s, i) => {
        const v = values[i];
        if (v !== null && v !== undefined && Number.isFinite(v)) s.points.push([t, v]);
        while (s.points.length > MAX_POINTS) s.points.shift();
      });
    }
    draw() {
      const c = this.canvas, dpr = window.devicePixelRatio || 1;
      const w = c.clientWidth || 600, h = c.clientHeight || 240;
      if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
        c.width = Math.round(w * dpr);
        c.height = Math.round(h * dpr);
      }
      const g = c.getContext("2d");
      g.setTransform(dpr, 0, 0, dpr, 0, 0);
      g.clearRect(0, 0, w, h);
      const pad = { l: 52, r: 12, t: 22, b: 26 };
      const pw = w - pad.l - pad.r, ph = h - pad.t - pad.b;
      const all = this.series.flatMap((s) => s.points);
      const plotted = Math.max(0, ...this.series.map((s) => s.points.length));
      c.dataset.points = String(plotted);
      c.dataset.series = this.series.map((s) => s.name + ":" + s.points.length).join(",");
      g.font = "11px system-ui, sans-serif";
      g.fillStyle = "#8a94a6";
      if (!all.length) {
        g.fillText("no data yet", pad.l + 8, pad.t + ph / 2);
        return;
      }
      let t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
      if (t1 - t0 < 1000) t0 = t1 - 1000;
      let vmax = Math.max(...all.map((p) => p[1]));
      vmax = vmax <= 0 ? 1 : niceCeil(vmax * 1.1);
      const x = (t) => pad.l + ((t - t0) / (t1 - t0)) * pw;
      const y = (v) => pad.t + ph - (v / vmax) * ph;
      // grid and axis labels
      g.strokeStyle = "#2a3140";
      g.lineWidth = 1;
      g.textAlign = "right";
      g.textBaseline = "middle";
      for (let i = 0; i <= 4; i++) {
        const v = (vmax * i) / 4, yy = Math.round(y(v)) + 0.5;
        g.beginPath(); g.moveTo(pad.l, yy); g.lineTo(pad.l + pw, yy); g.stroke();
        g.fillText(fmt(v, vmax < 10 ? 2 : Number.isInteger(v) ? 0 : 1), pad.l - 6, yy);
      }
      g.textBaseline = "top";
      for (let i = 0; i <= 3; i++) {
        const t = t0 + ((t1 - t0) * i) / 3;
        g.textAlign = i === 0 ? "left" : i === 3 ? "right" : "center";
        g.fillText(clock(new Date(t)), x(t), pad.t + ph + 6);
      }
      // series
      for (const s of this.series) {
        if (!s.points.length) continue;
        g.strokeStyle = s.color;
        g.lineWidth = 2;
        g.beginPath();
        s.points.forEach(([t, v], i) => (i ? g.lineTo(x(t), y(v)) : g.moveTo(x(t), y(v))));
        g.stroke();
        if (s.points.length === 1) {
          const [t, v] = s.points[0];
          g.fillStyle = s.color;
          g.beginPath(); g.arc(x(t), y(v), 3, 0, 2 * Math.PI); g.fill();
        }
      }
      // legend with the latest values
      g.textAlign = "left";
      g.textBaseline = "middle";
      let lx = pad.l;
      for (const s of this.series) {
        const last = s.points.length ? s.points[s.points.length - 1][1] : null;
        const label = s.name + " " + fmt(last, last !== null && last < 10 ? 2 : 1);
        g.fillStyle = s.color;
        g.fillRect(lx, 6, 10, 10);
        g.fillStyle = "#c9d1e0";
        g.fillText(label, lx + 14, 11);
        lx += g.measureText(label).width + 30;
      }
    }
  }
  function niceCeil(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  const throughput = new LineChart($("chart-throughput"), ["stored (counter rate)", "analytics window"]);
  const latency = new LineChart($("chart-latency"), ["p50", "p95", "p99"]);
  const windowLatency = new LineChart($("chart-window-latency"), ["avg", "p50", "p95"]);
  const charts = [throughput, latency, windowLatency];
  let prevMetrics = null, prevTime = 0, lastOk = null, busy = false;

  // ---- renderers ---------------------------------------------------------
  function renderAnalytics(a) {
    setText("v-throughput", fmt(a.throughput, 2));
    setText("v-rps", fmt(a.requests_per_second, 2));
    setText("v-latency", fmt(a.latency, 0));
    setText("v-p95", fmt(a.latency_p95, 0));
    setText("v-error-rate", a.error_rate === undefined ? "–" : fmt(a.error_rate * 100, 1) + "%");
    setText("v-satisfaction", fmt(a.user_satisfaction, 2));
    setText("v-business", fmt(a.business_value, 1));
    setText("v-cost", fmt(a.cost_per_request, 4));
    setText("v-count", fmt(a.event_count, 0));
    setText("v-window", "last " + (a.window_seconds || "–") + " s");
    const err = $("v-error-rate");
    if (err) err.classList.toggle("bad", (a.error_rate || 0) > 0.1);
  }
  function renderCorrelations(c) {
    setText("corr-score", "score " + fmt(c.correlation_score, 2) + (c.alert_triggered ? " · alerting" : ""));
    const tags = $("corr-patterns");
    tags.replaceChildren();
    for (const p of c.patterns_detected || []) {
      const s = document.createElement("span");
      s.className = "tag";
      s.textContent = p;
      tags.appendChild(s);
    }
    fillTable("findings-table", (c.active_findings || []).map((f) => ({
      cells: [f.name, f.subject || f.source, f.occurrences, fmt(f.score, 2), f.message],
      className: f.alert ? "alerting" : "",
    })), "no active findings in the last " + (c.window_seconds || "–") + " s");
    fillTable("alerts-table", (c.recent_alerts || []).slice(0, 10).map((a) => ({
      cells: [shortTime(a.raised_at), a.rule, a.subject, a.message],
    })), "no alerts in the window");
  }
  function renderResponses(r) {
    setText("responses-total", (r.total || 0) + " in all");
    fillTable("responses-table", (r.responses || []).map((x) => ({
      cells: [shortTime(x.requested_at), x.rule, x.action, x.target, x.outcome, x.reason],
      className: x.outcome === "failed" ? "alerting" : "",
    })), "no automated responses yet");
  }
  function renderPlugins(p) {
    setText("plugins-dir", (p.directory ? "from " + p.directory : "") + (p.watching ? " · watched" : "") +
      (p.config_error ? " · config change refused: " + (p.config_error.reason || JSON.stringify(p.config_error)) : ""));
    const rejected = (p.rejected || []).map((r) => ({
      cells: [r.plugin, r.stage, r.version, (r.sha256 || "").slice(0, 12), "–", "–", "–", "–", "rejected: " + r.reason],
      className: "alerting",
    }));
    // A shadow runs beside the live version of its name and acts on nothing.
    const shadows = (p.shadows || []).map((s) => ({
      cells: [s.plugin + " (shadow)", "", s.version, (s.sha256 || "").slice(0, 12), s.batches, s.failures, "–", "–",
        "shadow: agreement " + fmt(100 * s.agreement, 1) + "% (" + s.disagreeing_batches + " of " + s.batches + " batches differ)"],
      className: s.agreement < 1 ? "alerting" : "",
    }));
    fillTable("plugins-table", (p.plugins || []).map((x) => {
      const st = x.stats || {};
      const healthy = x.enabled !== false && !st.last_error;
      return {
        cells: [x.name, x.stage, x.version, (x.sha256 || "").slice(0, 12), st.calls, st.errors, st.traps,
          fmt(x.mean_call_ms, 3), x.enabled === false ? "disabled" : (st.last_error ? "failing: " + st.last_error : "ok")],
        className: healthy ? "" : "alerting",
      };
    }).concat(shadows, rejected), "no plugins loaded");
  }
  function renderPipeline(p) {
    const q = p.queue || {}, b = p.batching || {}, e = p.events || {}, db = p.database || {};
    setText("v-queue", fmt(q.depth, 0));
    setText("v-queue-cap", "of " + fmt(q.capacity, 0));
    const stage = p.stage_ms_per_batch || {};
    const facts = [
      ["mode", p.mode + (p.enabled === false ? " (disabled)" : "")],
      ["events processed", fmt(e.processed, 0) + " (" + fmt(e.duplicates, 0) + " duplicates)"],
      ["batches", fmt(b.batches, 0) + ", mean size " + fmt(b.average_batch_size, 1) + ", last " + fmt(b.last_batch_size, 0)],
      ["batch size in use", fmt(b.batch_limit, 0) + " (" + fmt(b.batch_size, 0) + " at low load, up to " + fmt(b.max_batch_size, 0) + " under a backlog)"],
      ["last batch", shortTime(b.last_batch_at)],
      ["ms per batch", "analytics " + fmt(stage.analytics, 3) + " · correlation " + fmt(stage.correlation, 3) + " · responses " + fmt(stage.responses, 3)],
      ["database", (db.backend || "–") + (db.failing ? " — FAILING: " + (db.last_error || "") : " ok") + ", " + fmt(db.batches_written, 0) + " batches written"],
      ["kafka", !p.kafka || p.kafka.enabled === false ? "disabled" : JSON.stringify(p.kafka).slice(0, 160)],
    ];
    const dl = $("pipeline-facts");
    dl.replaceChildren();
    for (const [k, v] of facts) {
      const dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = k;
      dd.textContent = v;
      if (k === "database" && db.failing) dd.className = "bad";
      dl.append(dt, dd);
    }
  }
  function renderHealth(h) {
    const el = $("health");
    el.textContent = h.status || "?";
    el.className = "badge " + (h.status === "healthy" ? "ok" : "bad");
    el.title = JSON.stringify(h.checks || {});
  }

  // ---- one update ----------------------------------------------------------
  async function update() {
    if (busy) return;
    busy = true;
    const now = Date.now();
    const jobs = {
      analytics: getJson("analytics"),
      correlations: getJson("correlations"),
      responses: getJson("automated-responses?limit=15"),
      plugins: getJson("plugins"),
      pipeline: getJson("processing/pipeline"),
      metrics: getText("metrics"),
      health: getJson("health"),
    };
    const names = Object.keys(jobs);
    const results = await Promise.allSettled(Object.values(jobs));
    const got = {}, failed = [];
    results.forEach((r, i) => (r.status === "fulfilled" ? (got[names[i]] = r.value) : failed.push(r.reason && r.reason.message || names[i])));
    const render = [["analytics", renderAnalytics], ["correlations", renderCorrelations], ["responses", renderResponses],
      ["plugins", renderPlugins], ["pipeline", renderPipeline], ["health", renderHealth]];
    for (const [k, fn] of render) {
      if (got[k]) {
        try { fn(got[k]); } catch (e) { failed.push(k + ": " + e.message); }
      }
    }
    // Chart points: the stored-events rate from counter deltas, the window's
    // figures from /analytics, ingest-to-stored p95 from histogram deltas.
    let rate = null, quantiles = [null, null, null];
    if (got.metrics) {
      const m = parseMetrics(got.metrics);
      if (prevMetrics && now > prevTime) {
        rate = Math.max(0, (m.processed - prevMetrics.processed) / ((now - prevTime) / 1000));
        quantiles = [0.5, 0.95, 0.99].map((q) => {
          const v = histogramQuantile(q, prevMetrics.buckets, m.buckets);
          return v === null ? null : v * 1000;
        });
      }
      prevMetrics = m;
      prevTime = now;
    }
    const a = got.analytics || {};
    throughput.push(now, [rate, got.analytics ? a.throughput : null]);
    latency.push(now, quantiles);
    windowLatency.push(now, [a.latency, a.latency_p50, a.latency_p95]);
    charts.forEach((c) => c.draw());

    const status = $("status");
    if (!failed.length) {
      lastOk = new Date(now);
      status.textContent = "Updated " + clock(lastOk);
      status.className = "status ok";
    } else {
      status.textContent = "Update failed (" + failed.join("; ") + ")" + (lastOk ? " — last success " + clock(lastOk) : "");
      status.className = "status bad";
    }
    if (lastOk) status.dataset.updated = lastOk.toISOString();
    status.dataset.failures = String(failed.length);
    busy = false;
  }

  setText("interval", (INTERVAL / 1000).toFixed(1));
  window.addEventListener("resize", () => charts.forEach((c) => c.draw()));
  window.hxpDashboard = { update, charts: { throughput, latency, windowLatency }, parseMetrics, histogramQuantile };
  charts.forEach((c) => c.draw());
  update();
  setInterval(update, INTERVAL);
})();
