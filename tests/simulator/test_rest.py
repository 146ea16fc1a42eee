"""The simulator's REST API, on the real process (its broker unreachable: the page must still work)."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from machine_simulator.identity import machine_identity
from machine_simulator.signals import FAULT_KINDS
from tests.fixtures.mqtt import SimulatorProcess


@pytest.fixture
def simulator(simulator_factory, port_factory) -> SimulatorProcess:
    nobody_listens = f"tcp://127.0.0.1:{port_factory()}"
    return simulator_factory(nobody_listens, seed=42)


def test_machines_have_stable_identities_and_no_fault_at_start(simulator) -> None:
    machines = simulator.get("api/machines")
    assert [m["id"] for m in machines] == ["machine1", "machine2", "machine3"]
    for m in machines:
        identity = machine_identity(42, m["id"])
        assert (m["provider"], m["barcode"]) == (identity.provider, identity.barcode)
        assert m["fault"] is None
    assert simulator.get("api/machines/machine2")["id"] == "machine2"
    assert simulator.get("api/faults") == []


def test_toggle_is_idempotent_and_logged_once(simulator) -> None:
    status, body = simulator.set_fault("machine2", "bearing", True)
    assert status == 200 and body["changed"] is True
    assert body["machine"]["fault"]["kind"] == "bearing"
    status, body = simulator.set_fault("machine2", "bearing", True)
    assert status == 200 and body["changed"] is False
    assert simulator.get("api/machines/machine2")["fault"]["kind"] == "bearing"

    status, body = simulator.set_fault("machine2", "bearing", False)
    assert status == 200 and body["changed"] is True and body["machine"]["fault"] is None
    status, body = simulator.set_fault("machine2", "bearing", False)
    assert status == 200 and body["changed"] is False

    log = simulator.get("api/faults")
    assert [(e["machineID"], e["kind"], e["active"]) for e in log] == [
        ("machine2", "bearing", True),
        ("machine2", "bearing", False),
    ]
    assert log[0]["time"] <= log[1]["time"]


def test_switching_kind_ends_the_old_fault(simulator) -> None:
    simulator.set_fault("machine1", "drift", True)
    status, body = simulator.set_fault("machine1", "stuck", True)
    assert status == 200 and body["machine"]["fault"]["kind"] == "stuck"
    assert [(e["kind"], e["active"]) for e in simulator.get("api/faults")] == [
        ("drift", True),
        ("drift", False),
        ("stuck", True),
    ]


@pytest.mark.parametrize(
    ("machine_id", "body", "status", "message"),
    [
        ("machine9", {"kind": "overload", "active": True}, 404, "unknown machine 'machine9'"),
        ("machine1", {"kind": "melt", "active": True}, 422, "unknown fault kind 'melt'"),
        ("machine1", {"kind": "overload", "active": "yes"}, 422, '"active" must be'),
        ("machine1", {"active": True}, 422, '"kind" must be one of'),
        ("machine1", ["overload"], 422, "body must be"),
    ],
)
def test_bad_requests_get_a_json_error_and_change_nothing(
    simulator, machine_id, body, status, message
) -> None:
    got_status, got = simulator.request("PUT", f"api/machines/{machine_id}/fault", body)
    assert got_status == status
    assert message in got["error"]
    assert simulator.get("api/faults") == []
    assert all(m["fault"] is None for m in simulator.get("api/machines"))


def test_a_body_that_is_not_json_is_rejected(simulator) -> None:
    req = urllib.request.Request(
        simulator.url + "api/machines/machine1/fault", data=b"{oops", method="PUT"
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(req, timeout=10)
    assert caught.value.code == 422
    assert "not JSON" in caught.value.read().decode()


def test_json_nested_too_deeply_is_a_422_not_a_500(simulator) -> None:
    request = urllib.request.Request(
        simulator.url + "api/machines/machine1/fault",
        data=b"[" * 100_000 + b"]" * 100_000,
        method="PUT",
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 422
    assert "nested too deeply" in caught.value.read().decode()
    assert simulator.get("api/machines/machine1")["fault"] is None


def test_unknown_machine_on_get_is_404(simulator) -> None:
    status, body = simulator.request("GET", "api/machines/nope")
    assert status == 404 and "known: machine1, machine2, machine3" in body["error"]


def test_page_lists_every_fault_kind(simulator) -> None:
    with urllib.request.urlopen(simulator.url, timeout=10) as response:
        page = response.read().decode()
        assert response.headers["Content-Type"].startswith("text/html")
    for kind in FAULT_KINDS:
        assert f'"{kind}"' in page


def test_stats_report_the_outbox_while_the_broker_is_unreachable(simulator) -> None:
    stats = simulator.get("api/stats")
    assert stats["publisher"]["connected"] is False
    assert stats["publisher"]["sent"] == 0
