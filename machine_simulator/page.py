"""The fault-toggle web page: one card per machine, rendered in the browser from the REST API.

The page holds no state of its own: it polls `GET /api/machines` every second and sends
`PUT /api/machines/<id>/fault`, so a reload or a second tab shows what the server has. It is a
Python string (not a package data file) so it ships with the module in every install.

>>> "overload" in render_page(["overload", "spike"], 1.0)
True
"""

from __future__ import annotations

import html
import json

from machine_simulator.signals import FIELDS, UNITS

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Machine simulator</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 1.5rem; background: #f4f5f7; color: #1d2330; }
  h1 { font-size: 1.3rem; margin: 0 0 .3rem; }
  #status { font-size: .85rem; color: #555; margin-bottom: 1rem; }
  #status.down { color: #b3261e; }
  #cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(17rem, 1fr)); gap: 1rem; }
  .card { background: #fff; border-radius: .6rem; padding: 1rem; border: 2px solid #d9dde3; }
  .card.faulty { border-color: #d93025; background: #fff6f5; }
  .card h2 { font-size: 1.1rem; margin: 0; }
  .meta { font-size: .8rem; color: #666; margin: .2rem 0 .7rem; }
  .values { display: grid; grid-template-columns: 1fr 1fr; gap: .4rem .8rem; margin-bottom: .8rem; }
  .values div { font-size: .8rem; color: #555; }
  .values b { display: block; font-size: 1.25rem; color: #1d2330; font-variant-numeric: tabular-nums; }
  .fault { display: flex; gap: .5rem; align-items: center; }
  .fault select { flex: 1; padding: .3rem; }
  .fault button { padding: .35rem .8rem; border-radius: 1rem; border: 1px solid #888; cursor: pointer; background: #eee; }
  .fault button[aria-pressed="true"] { background: #d93025; color: #fff; border-color: #d93025; }
  .badge { font-size: .8rem; margin-top: .5rem; min-height: 1.1em; color: #b3261e; }
  .error { color: #b3261e; font-size: .8rem; }
  #fleet-link { display: inline-block; font-size: .85rem; margin-bottom: 1rem; }
</style>
</head>
<body>
<h1>Machine simulator</h1>
<div id="status">connecting…</div>
__FLEET_LINK__
<div id="cards"></div>
<template id="card-template">
  <section class="card">
    <h2 data-role="name"></h2>
    <div class="meta" data-role="meta"></div>
    <div class="values" data-role="values"></div>
    <div class="fault">
      <select data-role="kind" aria-label="fault kind"></select>
      <button type="button" data-role="toggle" aria-pressed="false">Fault off</button>
    </div>
    <div class="badge" data-role="badge"></div>
    <div class="error" data-role="error"></div>
  </section>
</template>
<script>
"use strict";
const KINDS = __KINDS__;
const FIELDS = __FIELDS__;
const UNITS = __UNITS__;
const POLL_MS = __POLL_MS__;
const cards = new Map();

function fmtTime(ms) { return new Date(ms).toLocaleTimeString(); }

function makeCard(machine) {
  const node = document.getElementById("card-template").content.firstElementChild.cloneNode(true);
  node.dataset.machine = machine.id;
  node.querySelector("[data-role=name]").textContent = machine.id;
  node.querySelector("[data-role=meta]").textContent = machine.provider + " · " + machine.barcode;
  const values = node.querySelector("[data-role=values]");
  for (const field of FIELDS) {
    const cell = document.createElement("div");
    cell.dataset.field = field;
    const label = document.createElement("span");
    label.textContent = field + (UNITS[field] ? " (" + UNITS[field] + ")" : "");
    const value = document.createElement("b");
    value.textContent = "–";
    cell.append(value, label);
    values.append(cell);
  }
  const select = node.querySelector("[data-role=kind]");
  for (const kind of KINDS) {
    const option = document.createElement("option");
    option.value = kind;
    option.textContent = kind;
    select.append(option);
  }
  const button = node.querySelector("[data-role=toggle]");
  button.addEventListener("click", () => {
    const on = node.dataset.faultActive === "true";
    setFault(node, select.value, !on);
  });
  select.addEventListener("change", () => {
    if (node.dataset.faultActive === "true") setFault(node, select.value, true);
  });
  document.getElementById("cards").append(node);
  return node;
}

function render(node, machine) {
  const active = machine.fault !== null;
  node.dataset.faultActive = String(active);
  node.classList.toggle("faulty", active);
  const button = node.querySelector("[data-role=toggle]");
  button.setAttribute("aria-pressed", String(active));
  button.textContent = active ? "Fault on" : "Fault off";
  const select = node.querySelector("[data-role=kind]");
  if (active && document.activeElement !== select) select.value = machine.fault.kind;
  node.querySelector("[data-role=badge]").textContent = active
    ? machine.fault.kind + " since " + fmtTime(machine.fault.since) : "";
  if (machine.reading) {
    for (const field of FIELDS) {
      node.querySelector("[data-field=" + field + "] b").textContent =
        machine.reading[field].toFixed(1);
    }
  }
}

async function setFault(node, kind, active) {
  const error = node.querySelector("[data-role=error]");
  error.textContent = "";
  try {
    const response = await fetch("api/machines/" + encodeURIComponent(node.dataset.machine) + "/fault", {
      method: "PUT",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({kind: kind, active: active}),
    });
    const body = await response.json();
    if (!response.ok) { error.textContent = body.error || response.statusText; return; }
    render(node, body.machine);
  } catch (e) {
    error.textContent = "request failed: " + e;
  }
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const [machines, stats] = await Promise.all([
      fetch("api/machines").then(r => r.json()),
      fetch("api/stats").then(r => r.json()),
    ]);
    for (const machine of machines) {
      const node = cards.get(machine.id) || makeCard(machine);
      cards.set(machine.id, node);
      render(node, machine);
    }
    const p = stats.publisher;
    status.classList.toggle("down", !p.connected);
    status.textContent = (p.connected ? "broker connected" : "broker unreachable, buffering") +
      " · sent " + p.sent + " · queued " + p.queued + " · dropped " + p.dropped;
  } catch (e) {
    status.classList.add("down");
    status.textContent = "simulator unreachable: " + e;
  }
}

refresh();
setInterval(refresh, POLL_MS);
</script>
</body>
</html>
"""


def render_page(kinds: list[str], poll_seconds: float, fleet_url: str = "") -> str:
    """The page with the fault kinds and units baked in (JSON, safe inside <script>), and a
    link to `fleet_url` (the fleet status page) when it is an http(s) URL."""

    def js(value: object) -> str:
        return json.dumps(value).replace("<", "\\u003c")

    units = {field: UNITS[field] for field in FIELDS}
    return (
        _PAGE.replace("__KINDS__", js(kinds))
        .replace("__FIELDS__", js(list(FIELDS)))
        .replace("__UNITS__", js(units))
        .replace("__POLL_MS__", js(max(250, int(poll_seconds * 1000))))
        .replace("__FLEET_LINK__", fleet_link(fleet_url))
    )


def fleet_link(url: str) -> str:
    """A link to the fleet status page, or nothing for an empty or non-http(s) URL.

    >>> fleet_link("http://127.0.0.1:5007/")
    '<a id="fleet-link" href="http://127.0.0.1:5007/">Fleet status: which machines alert, are muted or lag</a>'
    >>> fleet_link("javascript:alert(1)")
    ''
    """
    if not url.startswith(("http://", "https://")):
        return ""
    return (
        f'<a id="fleet-link" href="{html.escape(url)}">'
        "Fleet status: which machines alert, are muted or lag</a>"
    )
