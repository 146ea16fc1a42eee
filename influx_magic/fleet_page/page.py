"""The fleet status page: one row per machine with its state, and its last hour of score
against its threshold, drawn in the browser from the server's JSON.

The page holds no data of its own: it fetches `/api/status` every `REFRESH_SECONDS` and
`/api/history` every `HISTORY_SECONDS` from its own origin, and writes every name and reason
with `textContent` (machine names, providers and operator reasons are data, never markup).

>>> "Fleet status" in render_page("n0nce")
True
"""

from __future__ import annotations

REFRESH_SECONDS = 5
HISTORY_SECONDS = 15


def render_page(nonce: str) -> str:
    """The page; `nonce` is the CSP nonce the server sent for this response."""
    script = SCRIPT.replace("REFRESH_MS", str(REFRESH_SECONDS * 1000)).replace(
        "HISTORY_MS", str(HISTORY_SECONDS * 1000)
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Fleet status</title>
<style nonce="{nonce}">{STYLE}</style>
</head>
<body>
<header class="top">
  <h1>Fleet status</h1>
  <span class="sub" id="summary">loading…</span>
  <span id="live" class="live" title="refreshes every {REFRESH_SECONDS} s">live</span>
</header>
<main>
<table id="fleet">
  <thead><tr>
    <th>Machine</th><th>State</th><th>Last scored</th><th>Warm-up</th>
    <th>Score / threshold</th><th>Last hour (score, threshold dashed)</th>
    <th>Open episode</th><th>Muted until</th><th>Overrides</th>
  </tr></thead>
  <tbody id="rows"></tbody>
</table>
<p id="empty" class="note" hidden>No machine scored yet: the pipeline has not committed a run.</p>
<ul id="notes" class="note"></ul>
<p class="note">Change things with <code>.venv/bin/influx-magic mute|unmute|ack|false-alarm</code>
and <code>influx-magic/machines.yaml</code>; the next pipeline run applies them.</p>
</main>
<script nonce="{nonce}">{script}</script>
</body>
</html>
"""


STYLE = """
:root { color-scheme: light; --fg: #1d2330; --muted: #5f6673; --line: #e3e6ea; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--fg); background: #f4f5f7; }
.top { display: flex; align-items: baseline; gap: 12px; flex-wrap: wrap; padding: 12px 24px;
       background: #17324d; color: #fff; }
.top h1 { margin: 0; font-size: 18px; }
.top .sub { color: #cfdae6; font-size: 13px; }
.live { margin-left: auto; font-size: 12px; padding: 2px 8px; border-radius: 10px; background: #2bac76; }
.live.offline { background: #e01e5a; }
main { padding: 16px 24px 40px; overflow-x: auto; }
table { border-collapse: collapse; background: #fff; border: 1px solid var(--line); min-width: 100%; }
th, td { padding: 6px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: middle; }
th { font-size: 12px; color: var(--muted); font-weight: 600; white-space: nowrap; }
td.machine b { display: block; }
td.machine small, td small { color: var(--muted); display: block; }
.state { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
         white-space: nowrap; background: #e6f4ea; color: #1e7b34; }
.state.anomaly { background: #fde7e9; color: #b3261e; }
.state.muted { background: #eceff3; color: #4a5261; }
.state.lagging { background: #fff4d6; color: #8a5a00; }
.state.warming-up { background: #e7f0fb; color: #1d5ea8; }
.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
.num.above { color: #b3261e; font-weight: 600; }
svg.chart { display: block; background: #fbfcfd; border: 1px solid var(--line); border-radius: 4px; }
svg.chart .score { fill: none; stroke: #1d5ea8; stroke-width: 1.5; }
svg.chart .limit { stroke: #b3261e; stroke-width: 1; stroke-dasharray: 4 3; }
svg.chart text { font-size: 9px; fill: #8a919c; }
code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; }
.note { color: var(--muted); }
ul.note { padding-left: 18px; }
"""

# Rows are keyed by unique_id (data-machine) and carry their state (data-state); every value
# goes in with textContent. The chart is an SVG polyline of the highest score per 10 s over the
# last hour (x: time, y: 0..1) with the machine's threshold dashed.
SCRIPT = """
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const W = 240, H = 48, HOUR = 3600 * 1000;
  const rows = document.getElementById("rows");
  const live = document.getElementById("live");
  let history = {};
  let latest = null;

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }
  function clock(iso) {
    if (!iso) return "–";
    const when = new Date(iso);
    if (isNaN(when)) return iso;
    const today = new Date(latest ? latest.now : Date.now()).toDateString();
    return when.toDateString() === today ? when.toLocaleTimeString() : when.toLocaleString();
  }
  function ago(seconds) {
    if (seconds === null || seconds === undefined) return "";
    const s = Math.max(0, Math.round(seconds));
    if (s < 120) return s + " s ago";
    if (s < 7200) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  }
  function chart(machine, now) {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "chart");
    svg.setAttribute("width", W); svg.setAttribute("height", H);
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", "score of " + machine.machine_id + " over the last hour");
    const y = function (score) { return (H - 2) - score * (H - 4); };
    const limit = document.createElementNS(SVG, "line");
    limit.setAttribute("class", "limit");
    limit.setAttribute("x1", 0); limit.setAttribute("x2", W);
    limit.setAttribute("y1", y(machine.threshold)); limit.setAttribute("y2", y(machine.threshold));
    svg.append(limit);
    const points = (history[machine.unique_id] || []).map(function (p) {
      const x = W - (now - new Date(p[0]).getTime()) / HOUR * W;
      return x.toFixed(1) + "," + y(p[1]).toFixed(1);
    });
    if (points.length) {
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("class", "score");
      line.setAttribute("points", points.join(" "));
      svg.append(line);
    }
    [["1 h ago", 2, "start"], ["now", W - 2, "end"]].forEach(function (label) {
      const text = document.createElementNS(SVG, "text");
      text.setAttribute("x", label[1]); text.setAttribute("y", H - 3);
      text.setAttribute("text-anchor", label[2]);
      text.textContent = label[0];
      svg.append(text);
    });
    svg.dataset.points = String(points.length);
    return svg;
  }
  function row(machine, now) {
    const tr = el("tr");
    tr.dataset.machine = machine.unique_id;
    tr.dataset.state = machine.state;
    const name = el("td", "machine");
    name.append(el("b", null, machine.machine_id), el("small", null, machine.provider),
                el("small", null, machine.unique_id));
    const state = el("td");
    state.append(el("span", "state " + machine.state.replace(" ", "-"), machine.state));
    const scored = el("td", "num");
    scored.append(el("span", null, clock(machine.last_scored)),
                  el("small", null, ago(machine.lag_seconds)));
    const warm = el("td", "num", machine.warm ? "warm" :
                    machine.window_fill + " / " + machine.window_size);
    const score = machine.latest_score === null ? "–" : machine.latest_score.toFixed(2);
    const above = machine.latest_score !== null && machine.latest_score > machine.threshold;
    const versus = el("td", "num" + (above ? " above" : ""),
                      score + " / " + machine.threshold.toFixed(2));
    const raised = Object.keys(machine.feature_thresholds);
    if (raised.length) {
      versus.append(el("small", null, raised.map(function (f) {
        return f + " " + machine.feature_thresholds[f].toFixed(3); }).join(", ")));
    }
    const graph = el("td");
    graph.append(chart(machine, now));
    const episode = el("td");
    if (machine.open_episode) {
      episode.append(el("code", null, machine.open_episode),
                     el("small", null, "since " + clock(machine.episode_since) +
                        (machine.episode_note ? " · " + machine.episode_note : "")));
    } else { episode.textContent = "–"; }
    const muted = el("td");
    if (machine.muted_until) {
      muted.append(el("span", null, clock(machine.muted_until)),
                   el("small", null, machine.mute_reason));
    } else { muted.textContent = "–"; }
    const overrides = el("td");
    if (machine.overrides.length) {
      machine.overrides.forEach(function (text) { overrides.append(el("small", null, text)); });
    } else { overrides.textContent = "–"; }
    tr.append(name, state, scored, warm, versus, graph, episode, muted, overrides);
    return tr;
  }
  function render() {
    if (!latest) return;
    const now = new Date(latest.now).getTime();
    rows.replaceChildren.apply(rows, latest.machines.map(function (m) { return row(m, now); }));
    document.getElementById("empty").hidden = latest.machines.length > 0;
    const counts = {};
    latest.machines.forEach(function (m) { counts[m.state] = (counts[m.state] || 0) + 1; });
    const parts = Object.keys(counts).sort().map(function (k) { return counts[k] + " " + k; });
    document.getElementById("summary").textContent = latest.machines.length + " machines" +
      (parts.length ? ": " + parts.join(", ") : "") + " · updated " + clock(latest.now);
    const notes = document.getElementById("notes");
    notes.replaceChildren.apply(notes, latest.notes.map(function (n) { return el("li", null, n); }));
  }
  async function refresh() {
    try {
      const answer = await fetch("/api/status", {cache: "no-store"});
      latest = await answer.json();
      live.textContent = "live"; live.classList.remove("offline");
      render();
    } catch (error) {
      live.textContent = "offline"; live.classList.add("offline");
    }
  }
  async function refreshHistory() {
    try {
      history = await (await fetch("/api/history", {cache: "no-store"})).json();
      render();
    } catch (error) { /* the status poll shows the page as offline */ }
  }
  refresh().then(refreshHistory);
  setInterval(refresh, REFRESH_MS);
  setInterval(refreshHistory, HISTORY_MS);
})();
"""
