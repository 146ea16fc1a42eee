"""The simulator's web page and REST API (aiohttp, already locked through amqtt's stack).

- `GET /` the fault-toggle page;
- `GET /api/machines`, `GET /api/machines/<id>`: identity, active fault, latest reading;
- `PUT /api/machines/<id>/fault` with `{"kind": "...", "active": true|false}`: idempotent
  (setting on twice leaves one fault started once); answers `{"changed", "machine"}`;
- `GET /api/faults`: the ground-truth log, oldest first;
- `GET /api/stats`: publishing progress (readings per machine, outbox, drops).

Errors are JSON `{"error": "..."}`: 404 for an unknown machine, 422 for an unknown kind or a
body that is not `{"kind": str, "active": bool}`.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from machine_simulator.page import render_page
from machine_simulator.runner import Simulator
from machine_simulator.settings import SETTINGS
from machine_simulator.signals import FAULT_KINDS, UnknownFaultKind, UnknownMachine

SIMULATOR = web.AppKey("simulator", Simulator)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _machine_or_404(sim: Simulator, machine_id: str) -> dict[str, Any] | web.Response:
    try:
        return sim.machine_state(machine_id)
    except UnknownMachine:
        known = ", ".join(sim.fleet.machine_ids)
        return _error(404, f"unknown machine {machine_id!r}; known: {known}")


async def index(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    return web.Response(
        text=render_page(list(FAULT_KINDS), min(sim.interval, 1.0), SETTINGS.get("FLEET_PAGE_URL")),
        content_type="text/html",
    )


async def list_machines(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIMULATOR].machines())


async def get_machine(request: web.Request) -> web.Response:
    found = _machine_or_404(request.app[SIMULATOR], request.match_info["machine_id"])
    return found if isinstance(found, web.Response) else web.json_response(found)


async def put_fault(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    machine_id = request.match_info["machine_id"]
    found = _machine_or_404(sim, machine_id)
    if isinstance(found, web.Response):
        return found
    try:
        body = json.loads(await request.text())
    except ValueError as exc:
        return _error(422, f"body is not JSON: {exc}")
    except RecursionError:  # "[[[[...": json's parser recurses per level
        return _error(422, "body is not JSON we can read: nested too deeply")
    if not isinstance(body, dict):
        return _error(422, 'body must be {"kind": "<fault kind>", "active": true|false}')
    kind, active = body.get("kind"), body.get("active")
    if not isinstance(kind, str):
        return _error(422, f'"kind" must be one of {", ".join(FAULT_KINDS)}')
    if not isinstance(active, bool):
        return _error(422, '"active" must be true or false')
    try:
        changed = sim.set_fault(machine_id, kind, active)
    except UnknownFaultKind as exc:
        return _error(422, str(exc))
    return web.json_response({"changed": changed, "machine": sim.machine_state(machine_id)})


async def list_faults(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIMULATOR].fault_log())


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIMULATOR].stats())


def create_app(sim: Simulator) -> web.Application:
    app = web.Application()
    app[SIMULATOR] = sim
    app.router.add_get("/", index)
    app.router.add_get("/api/machines", list_machines)
    app.router.add_get("/api/machines/{machine_id}", get_machine)
    app.router.add_put("/api/machines/{machine_id}/fault", put_fault)
    app.router.add_get("/api/faults", list_faults)
    app.router.add_get("/api/stats", stats)
    return app
