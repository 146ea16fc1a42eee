"""The fault page in headless Chromium: toggle machine2, reload, still on, REST agrees."""

from __future__ import annotations

import pytest

from tests.fixtures.mqtt import MqttBroker


@pytest.fixture
def page(chromium):
    context = chromium.new_context()
    yield context.new_page()
    context.close()


@pytest.mark.browser
def test_toggle_survives_a_reload_and_matches_the_api(
    page, amqtt_broker: MqttBroker, simulator_factory
) -> None:
    from playwright.sync_api import expect

    sim = simulator_factory(amqtt_broker.url, interval=0.1)
    page.goto(sim.url)
    card = page.locator('[data-machine="machine2"]')
    expect(card).to_have_attribute("data-fault-active", "false")
    # Live values arrive from the server.
    expect(card.locator('[data-field="load"] b')).not_to_have_text("–")

    card.locator("[data-role=kind]").select_option("drift")
    card.locator("[data-role=toggle]").click()
    expect(card).to_have_attribute("data-fault-active", "true")
    expect(card).to_have_class("card faulty")
    expect(card.locator("[data-role=badge]")).to_contain_text("drift since")

    page.reload()
    card = page.locator('[data-machine="machine2"]')
    expect(card).to_have_attribute("data-fault-active", "true")
    expect(card.locator("[data-role=kind]")).to_have_value("drift")
    expect(card.locator("[data-role=toggle]")).to_have_attribute("aria-pressed", "true")
    expect(page.locator('[data-machine="machine1"]')).to_have_attribute(
        "data-fault-active", "false"
    )

    state = sim.get("api/machines/machine2")
    assert state["fault"]["kind"] == "drift"
    assert [(e["machineID"], e["kind"], e["active"]) for e in sim.get("api/faults")] == [
        ("machine2", "drift", True)
    ]

    # A second tab shows the same; switching it off there is seen by the first after a poll.
    other = page.context.new_page()
    other.goto(sim.url)
    other_card = other.locator('[data-machine="machine2"]')
    expect(other_card).to_have_attribute("data-fault-active", "true")
    other_card.locator("[data-role=toggle]").click()
    expect(other_card).to_have_attribute("data-fault-active", "false")
    expect(card).to_have_attribute("data-fault-active", "false")
    assert sim.get("api/machines/machine2")["fault"] is None
