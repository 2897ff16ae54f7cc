"""The dashboard's two pages: plain HTML, CSS and JavaScript (no build step, nothing fetched
from elsewhere). The main page draws its charts as inline SVG from the summary the server
pushes (``EventSource('events')``); every value goes into the page as text, never as HTML."""

from __future__ import annotations

from string import Template

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; background: #f4f6f8; color: #1d2630; }
header { background: #1d3557; color: #fff; padding: 10px 20px; display: flex; gap: 24px; align-items: baseline; }
header h1 { font-size: 20px; margin: 0; }
header .meta { font-size: 13px; opacity: .85; }
#conn { margin-left: auto; font-size: 13px; padding: 2px 8px; border-radius: 10px; background: #6c757d; }
#conn.live { background: #2e7d32; }
#conn.down { background: #c62828; }
main { padding: 14px 20px; display: grid; grid-template-columns: 1fr 1fr; gap: 14px; }
section { background: #fff; border-radius: 8px; padding: 10px 14px; box-shadow: 0 1px 3px rgba(0,0,0,.12); }
section.wide { grid-column: 1 / span 2; }
h2 { font-size: 15px; margin: 2px 0 8px; color: #1d3557; }
.counts { display: flex; flex-wrap: wrap; gap: 8px; }
.card { border-radius: 6px; padding: 6px 10px; min-width: 92px; background: #eef1f5; border-left: 5px solid #9e9e9e; }
.card .n { font-size: 20px; font-weight: 600; }
.card .s { font-size: 11px; color: #555; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 3px 6px; border-bottom: 1px solid #e3e7ec; vertical-align: top; }
th { color: #555; font-weight: 600; }
.bar { background: #e3e7ec; border-radius: 3px; height: 10px; width: 120px; display: inline-block; }
.bar > span { display: block; height: 10px; border-radius: 3px; background: #1565c0; }
pre { background: #f4f6f8; padding: 6px; margin: 4px 0; font-size: 12px; white-space: pre-wrap; max-height: 300px; overflow: auto; }
svg text { font-size: 11px; fill: #555; }
a { color: #1565c0; }
.muted { color: #777; font-size: 12px; }
"""

MAIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>balsamctl dashboard — __NAMESPACE__</title>
<style>""" + _STYLE + """</style></head>
<body>
<header><h1>balsamctl dashboard</h1>
<span class="meta">namespace <b id="namespace">__NAMESPACE__</b> · store __STORE__ · revision <span id="revision"></span>
 · <span id="updated"></span></span><span id="conn">connecting</span></header>
<main>
<section class="wide"><h2>Jobs by state — <span id="count-total"></span> in all</h2><div class="counts" id="counts"></div></section>
<section><h2>Throughput — jobs finished per minute</h2><svg id="chart-throughput" width="100%" height="190"></svg></section>
<section><h2>Node utilization — nodes busy (average per minute); now <span id="busy-now"></span></h2>
<svg id="chart-utilization" width="100%" height="190"></svg></section>
<section><h2>Nodes (<span id="nodes-count"></span>)</h2><table id="nodes"><thead><tr><th>NODE</th><th>ALLOCATION</th>
<th>CPU</th><th>GPU</th><th>OCCUPANCY</th><th>JOBS</th><th>HEARTBEAT</th></tr></thead><tbody></tbody></table></section>
<section><h2>Batch allocations (<span id="batchjobs-count"></span>)</h2><table id="batchjobs"><thead><tr><th>NAME</th>
<th>STATE</th><th>NODES</th><th>WALL TIME</th><th>QUEUE</th><th>SCHEDULER ID</th><th>STARTED</th></tr></thead><tbody></tbody></table></section>
<section class="wide"><h2>Failing jobs (<span id="failing-count"></span>; most recent first)</h2>
<table id="failing"><thead><tr><th>JOB</th><th>APP</th><th>STATE</th><th>EXIT</th><th>REASON</th><th>OUTPUT (tail)</th></tr></thead>
<tbody></tbody></table></section>
</main>
<script>
"use strict";
const COLORS = {JOB_FINISHED:"#2e7d32", FAILED:"#c62828", RUNNING:"#1565c0", RUN_ERROR:"#ef6c00", RUN_TIMEOUT:"#ad1457",
  CREATED:"#9e9e9e", AWAITING_PARENTS:"#bdbdbd", READY:"#80deea", STAGED_IN:"#4dd0e1", PREPROCESSED:"#26a69a",
  RUN_DONE:"#7986cb", POSTPROCESSED:"#9575cd", STAGED_OUT:"#ba68c8", RESTART_READY:"#ffb300"};
const ORDER = Object.keys(COLORS);
const SVGNS = "http://www.w3.org/2000/svg";
function el(tag, attrs, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVGNS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function hhmm(epoch) { const d = new Date(epoch * 1000); return d.toISOString().slice(11, 16); }
function age(s) { if (s === null || s === undefined) return "—"; s = Math.max(0, Math.round(s));
  return s < 120 ? s + "s" : s < 7200 ? Math.round(s / 60) + "m" : Math.round(s / 3600) + "h"; }
function chart(svg, start, values, kind, color) {
  svg.replaceChildren();
  const W = svg.clientWidth || 600, H = svg.clientHeight || 190, L = 44, B = 22, T = 8, R = 8;
  const n = values.length, max = Math.max(1, ...values);
  const x = i => L + (W - L - R) * i / Math.max(1, n), y = v => T + (H - T - B) * (1 - v / max);
  for (const f of [0, 0.5, 1]) {
    const v = max * f;
    svg.append(el("svg:line", {x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e3e7ec"}));
    svg.append(el("svg:text", {x: L - 4, y: y(v) + 4, "text-anchor": "end"}, Number.isInteger(v) ? v : v.toFixed(1)));
  }
  const ticks = Math.min(6, n);
  for (let k = 0; k < ticks; k++) {
    const i = Math.floor(k * (n - 1) / Math.max(1, ticks - 1));
    svg.append(el("svg:text", {x: x(i), y: H - 6}, hhmm(start + 60 * i)));
  }
  if (kind === "bars") {
    const w = Math.max(1, (W - L - R) / Math.max(1, n) - 1);
    values.forEach((v, i) => { if (v > 0) svg.append(el("svg:rect", {x: x(i), y: y(v), width: w, height: y(0) - y(v), fill: color})); });
  } else {
    let d = "";
    values.forEach((v, i) => { d += (i ? " L" : "M") + x(i) + " " + y(v) + " L" + x(i + 1) + " " + y(v); });
    if (n) {
      svg.append(el("svg:path", {d: d + " L" + x(n) + " " + y(0) + " L" + x(0) + " " + y(0) + " Z", fill: color, "fill-opacity": "0.15"}));
      svg.append(el("svg:path", {d: d, fill: "none", stroke: color, "stroke-width": 2}));
    }
  }
}
function rows(id, items, cells) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren(...items.map(item => { const tr = el("tr"); for (const c of cells(item)) tr.append(c); return tr; }));
}
function td(text) { return el("td", {}, text); }
function render(s) {
  document.getElementById("revision").textContent = s.revision;
  document.getElementById("updated").textContent = "updated " + new Date(s.generated * 1000).toISOString().slice(11, 19) + " UTC";
  document.getElementById("count-total").textContent = s.total;
  const states = ORDER.filter(k => s.counts[k]).concat(Object.keys(s.counts).filter(k => !ORDER.includes(k)));
  document.getElementById("counts").replaceChildren(...states.map(k => {
    const c = el("div", {class: "card", id: "count-" + k, style: "border-left-color:" + (COLORS[k] || "#616161")});
    c.append(el("div", {class: "n"}, s.counts[k]), el("div", {class: "s"}, k)); return c; }));
  chart(document.getElementById("chart-throughput"), s.series.start, s.series.finished, "bars", "#2e7d32");
  chart(document.getElementById("chart-utilization"), s.series.start, s.series.busy, "line", "#1565c0");
  document.getElementById("busy-now").textContent = s.busyNow;
  document.getElementById("nodes-count").textContent = s.nodes.length;
  rows("nodes", s.nodes, n => {
    const occ = el("td"); const bar = el("span", {class: "bar"}); const fill = el("span", {style: "width:" + Math.round(100 * Math.min(1, n.occupancy)) + "%"});
    bar.append(fill); occ.append(bar, document.createTextNode(" " + n.occupancy.toFixed(2)));
    return [td(n.name), td(n.batchJob || "—"), td(n.busyCpus + "/" + n.cpus), td(n.busyGpus + "/" + n.gpus), occ, td(n.jobs), td(age(n.heartbeatAge))]; });
  document.getElementById("batchjobs-count").textContent = s.batchjobs.length;
  rows("batchjobs", s.batchjobs, b => [td(b.name), td(b.state + (b.schedulerState ? " (" + b.schedulerState + ")" : "")), td(b.nodes),
    td(b.wallTimeMin + " min"), td(b.queue || "—"), td(b.schedulerId || "—"), td(b.startTime ? b.startTime.slice(0, 19).replace("T", " ") : "—")]);
  document.getElementById("failing-count").textContent = s.failingTotal;
  rows("failing", s.failing, f => {
    const name = el("td"); name.append(el("a", {href: "jobs/" + encodeURIComponent(f.name)}, f.name));
    const out = el("td"); if (f.outputTail) { const det = el("details"); det.append(el("summary", {}, "output"), el("pre", {}, f.outputTail)); out.append(det); }
    return [name, td(f.app), td(f.state), td(f.returnCode === null ? "—" : f.returnCode), el("td", {class: "reason"}, f.reason), out]; });
  const conn = document.getElementById("conn");
  if (s.error) { conn.textContent = s.error; conn.className = "down"; }
  window.__rendered = {version: s.version, revision: s.revision, at: performance.timeOrigin + performance.now()};
}
render(__INITIAL__);
const source = new EventSource("events");
source.addEventListener("summary", e => { render(JSON.parse(e.data));
  const conn = document.getElementById("conn"); if (!conn.classList.contains("down")) { conn.textContent = "live"; conn.className = "live"; } });
source.onopen = () => { const c = document.getElementById("conn"); c.textContent = "live"; c.className = "live"; };
source.onerror = () => { const c = document.getElementById("conn"); c.textContent = "reconnecting"; c.className = "down"; };
</script>
</body></html>
"""

JOB_PAGE = Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>job $name — balsamctl dashboard</title>
<style>""" + _STYLE.replace("$", "$$") + """</style></head>
<body>
<header><h1>job <span id="job-name">$name</span></h1><span class="meta" id="job-meta">namespace $namespace ·
state <b id="job-state">$state</b> · <a style="color:#fff" href="../">back to the dashboard</a></span></header>
<main>
<section><h2>Status</h2>$brief</section>
<section><h2>Spec</h2>$spec</section>
<section class="wide"><h2>Conditions</h2>$conditions</section>
<section class="wide"><h2>History</h2><table id="history"><thead><tr><th>TIME</th><th>FROM</th><th>TO</th><th>MESSAGE</th></tr>
</thead><tbody>$history</tbody></table></section>
<section class="wide"><h2>Output (tail)</h2><pre id="output-tail">$tail</pre></section>
<section><h2>Metadata</h2>$metadata</section>
<section><h2>Status (all fields)</h2>$status</section>
</main></body></html>
""")
