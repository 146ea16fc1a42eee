"""Rendering Slack messages to HTML: readable Block Kit, everything escaped, plots inline."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from localflux.inbox.page import (
    block_to_html,
    message_to_html,
    messages_html,
    mrkdwn_to_html,
    render_page,
)
from localflux.inbox.store import InboxMessage

HOSTILE = [
    "<script>window.pwned = 1</script>",
    '<img src=x onerror="window.pwned = 2">',
    "&lt;script&gt;alert(3)&lt;/script&gt;",  # Slack-escaped: displays as text, never as a tag
    '"><svg onload=alert(4)>',
    "<javascript:alert(5)|click me>",
    "<data:text/html;base64,PHNjcmlwdD4=|data>",
    "*bold <b>tag</b>*",
    "`<code>` ```<pre>```",
]


class TagCollector(HTMLParser):
    """Every start tag with its attributes, as a browser's parser would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags_of(markup: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = TagCollector()
    parser.feed(markup)
    return parser.tags


def message(payload: dict, key: str | None = None) -> InboxMessage:
    return InboxMessage.received(payload, key)


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_never_becomes_markup(text: str) -> None:
    markup = message_to_html(
        message(
            {
                "text": text,
                "blocks": [
                    {"type": "header", "text": {"type": "plain_text", "text": text}},
                    {"type": "section", "text": {"type": "mrkdwn", "text": text}},
                    {"type": "section", "fields": [{"type": "mrkdwn", "text": text}]},
                    {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]},
                    {"type": text},
                ],
                "attachments": [
                    {"title": text, "text": text, "fields": [{"title": text, "value": text}]}
                ],
            },
            key=text,
        )
    )

    allowed = {
        "article",
        "header",
        "time",
        "span",
        "div",
        "h3",
        "strong",
        "em",
        "s",
        "code",
        "pre",
        "a",
        "details",
        "summary",
    }
    for tag, attrs in tags_of(markup):
        assert tag in allowed, (tag, markup)
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        if tag == "a":
            assert re.match(r"^(https?://|/(?!/)|mailto:)", attrs["href"] or ""), attrs


def test_slack_links_become_links_and_unsafe_ones_stay_text() -> None:
    markup = mrkdwn_to_html(
        "see <http://mage:6789/runs/7|the run> and <javascript:alert(1)|this> and <@U123>"
    )

    assert [attrs["href"] for tag, attrs in tags_of(markup) if tag == "a"] == [
        "http://mage:6789/runs/7"
    ]
    assert "javascript:alert(1) (this)" in markup
    assert "@U123" in markup


def test_formatting_is_applied_outside_code_only() -> None:
    assert mrkdwn_to_html("*load* _rose_ ~fast~ `*not bold*`") == (
        "<strong>load</strong> <em>rose</em> <s>fast</s> <code>*not bold*</code>"
    )
    assert mrkdwn_to_html("machine_id_2 and 2*3*4") == "machine_id_2 and 2*3*4"


def test_alert_blocks_render_readably() -> None:
    payload = {
        "text": "Anomaly on machine2",
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": ":rotating_light: Anomaly on machine2"},
            },
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": "*Machine*\nmachine2"},
                    {"type": "mrkdwn", "text": "*Peak score*\n0.97"},
                ],
            },
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "features: load, power"}]},
            {"type": "divider"},
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open run"},
                        "url": "http://mage:6789/r/7",
                    }
                ],
            },
        ],
    }

    markup = message_to_html(message(payload, "ep-9:opened"))

    assert '<h3 class="b-header">\U0001f6a8 Anomaly on machine2</h3>' in markup
    assert (
        '<div class="b-fields"><div class="mrkdwn"><strong>Machine</strong>\nmachine2</div>'
        in markup
    )
    assert '<div class="b-context"><span>features: load, power</span></div>' in markup
    assert '<hr class="b-divider">' in markup
    assert '<a class="button" href="http://mage:6789/r/7"' in markup
    assert '<span class="key">ep-9:opened</span>' in markup


def test_plot_links_and_image_blocks_are_shown_inline_once() -> None:
    plot = "http://127.0.0.1:5006/plots/machine2.png"
    payload = {
        "text": f"Anomaly on machine2 <{plot}|plot>",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"<{plot}|Plot>"}},
            {
                "type": "image",
                "image_url": "http://127.0.0.1:5006/plots/other.png",
                "alt_text": "score",
            },
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": "<http://mage:6789/runs/7|Mage run>"},
            },
        ],
    }

    markup = message_to_html(message(payload))

    images = [attrs["src"] for tag, attrs in tags_of(markup) if tag == "img"]
    assert images == ["http://127.0.0.1:5006/plots/other.png", plot]  # the block, then the link


@pytest.mark.parametrize(
    "block",
    [
        {"type": "section", "fields": "not a list"},
        {"type": "header"},
        {"type": "image"},
        {"type": "context", "elements": None},
        {"type": "unknown_kind", "x": 1},
        "just a string",
        42,
    ],
)
def test_malformed_or_unknown_blocks_show_as_json_instead_of_failing(block: object) -> None:
    markup = block_to_html(block, [])

    assert markup.startswith('<details class="b-raw">')


def test_messages_are_listed_newest_first() -> None:
    older = InboxMessage("2024-01-01T10:00:00.000+00:00", None, "older", {"text": "older"})
    newer = InboxMessage("2024-01-01T11:00:00.000+00:00", None, "newer", {"text": "newer"})

    markup = messages_html([older, newer])

    assert markup.index("newer") < markup.index("older")


def test_page_scripts_and_styles_carry_the_nonce() -> None:
    page = render_page([], "http://127.0.0.1:5006/hook", "n0nce")

    for tag, attrs in tags_of(page):
        if tag in ("script", "style"):
            assert attrs.get("nonce") == "n0nce"
    assert "No alerts yet" in page
