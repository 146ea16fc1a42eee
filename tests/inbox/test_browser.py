"""The inbox page in headless Chromium: newest first, plots load, nothing injected, live."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.inbox.helpers import Inbox, make_png, post_json

pytestmark = pytest.mark.browser


@pytest.fixture
def page(chromium) -> Iterator[object]:
    yield chromium.new_page(viewport={"width": 1000, "height": 900})


def test_page_shows_alerts_newest_first_with_the_plot_and_refreshes(
    inbox: Inbox, page, tmp_path: Path
) -> None:
    make_png(inbox.plots_dir / "machine2.png")
    hostile = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
    post_json(
        inbox.hook, {"text": f"Resolved: machine1 {hostile}"}, {"Idempotency-Key": "ep-1:resolved"}
    )
    post_json(
        inbox.hook,
        {
            "text": "Anomaly on machine2 (acme-machine2)",
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": "Anomaly on machine2"}},
                {
                    "type": "section",
                    "fields": [
                        {"type": "mrkdwn", "text": "*Peak score*\n0.97"},
                        {"type": "mrkdwn", "text": "*Moved*\nload, power"},
                    ],
                },
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": f"<{inbox.url}/plots/machine2.png|Plot>"},
                },
            ],
        },
        {"Idempotency-Key": "ep-2:opened"},
    )
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    page.goto(inbox.url + "/")

    articles = page.locator("article.message")
    assert articles.count() == 2
    assert articles.nth(0).locator("h3").inner_text() == "Anomaly on machine2"
    assert "Resolved: machine1" in articles.nth(1).inner_text()
    assert "<script>window.pwned = 1</script>" in articles.nth(1).inner_text()  # shown as text
    plot = articles.nth(0).locator("img.plot")
    plot.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=plot.element_handle())
    assert plot.evaluate("img => img.naturalWidth") == 160
    assert page.evaluate("window.pwned") is None
    page.screenshot(path=str(tmp_path / "inbox.png"), full_page=True)

    post_json(inbox.hook, {"text": "Anomaly on machine3"}, {"Idempotency-Key": "ep-3:opened"})

    expect(articles).to_have_count(3, timeout=15_000)  # the page refreshed itself
    assert "Anomaly on machine3" in articles.nth(0).inner_text()
    assert page.locator("#count").inner_text() == "3 messages"
    assert page.evaluate("window.pwned") is None
    assert errors == []
