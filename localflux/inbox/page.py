"""The inbox's web page: Slack messages rendered as readable, escaped HTML.

Alert text is untrusted input (it can carry machine names, provider names, anything a sender
put in it), so every string is HTML-escaped before it is placed, and links are only emitted for
http(s), mailto and same-site paths. The page's Content-Security-Policy (set by the server)
allows only the page's own script, as a second line of defence.

Block Kit is rendered to the degree an alert needs it to be read: header, section (text,
fields, accessory), context, divider, image, actions (link buttons), rich_text, and legacy
attachments. Unknown blocks are shown as their JSON, never dropped. Images (image blocks, and
links to `/plots/...` images, which is how the pipeline links its plots) are shown inline.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from localflux.inbox.store import InboxMessage

PAGE_LIMIT = 200
REFRESH_SECONDS = 2
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp")

# Slack shortcodes an alert is likely to use; others stay as text.
EMOJI = {
    "rotating_light": "\U0001f6a8",
    "warning": "\u26a0\ufe0f",
    "white_check_mark": "\u2705",
    "heavy_check_mark": "\u2714\ufe0f",
    "x": "\u274c",
    "red_circle": "\U0001f534",
    "large_green_circle": "\U0001f7e2",
    "large_yellow_circle": "\U0001f7e1",
    "fire": "\U0001f525",
    "chart_with_upwards_trend": "\U0001f4c8",
    "bar_chart": "\U0001f4ca",
    "mag": "\U0001f50d",
    "bell": "\U0001f514",
    "gear": "\u2699\ufe0f",
    "information_source": "\u2139\ufe0f",
}

_LINK = re.compile(r"<([^<>\s|]+)(?:\|([^<>]*))?>")
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*:", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"\x00(\d+)\x00")
_CODE_BLOCK = re.compile(r"```(.+?)```", re.DOTALL)
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_ITALIC = re.compile(r"(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])")
_STRIKE = re.compile(r"(?<![\w~])~(?=\S)([^~\n]+?)(?<=\S)~(?![\w~])")
_EMOJI = re.compile(r":([a-z0-9_+-]+):")


def safe_url(url: str) -> str | None:
    """The URL if a link to it is harmless (http, https, mailto or a same-site path).

    >>> safe_url("http://127.0.0.1:5006/plots/machine2.png")
    'http://127.0.0.1:5006/plots/machine2.png'
    >>> safe_url("/plots/a.png")
    '/plots/a.png'
    >>> safe_url("javascript:alert(1)") is None, safe_url("//evil.example/x") is None
    (True, True)
    """
    url = url.strip()
    if url.startswith("/") and not url.startswith("//"):
        return url
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.netloc:
        return url
    if parts.scheme == "mailto" and parts.path:
        return url
    return None


def is_plot_image(url: str) -> bool:
    """Whether a link points at an image under `/plots/`, to be shown inline.

    >>> is_plot_image("http://127.0.0.1:5006/plots/2024/machine2.png?run=7")
    True
    >>> is_plot_image("http://mage:6789/pipelines/x/runs/7")
    False
    """
    path = urlsplit(url).path
    return "/plots/" in path and path.lower().endswith(IMAGE_SUFFIXES)


def _emoji(escaped: str) -> str:
    return _EMOJI.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), escaped)


def plain_to_html(text: str) -> str:
    """A plain_text object's text: escaped, with known emoji shortcodes.

    >>> plain_to_html("<b>machine2</b> :warning:")
    '&lt;b&gt;machine2&lt;/b&gt; ⚠️'
    """
    return _emoji(html.escape(text))


def mrkdwn_to_html(text: str, images: list[str] | None = None) -> str:
    """Slack mrkdwn as escaped HTML; `<url|label>` links, *bold*, _italic_, ~strike~, code.

    Links to plot images are also appended to `images`, so the caller can show them inline.
    Slack senders escape `&`, `<` and `>` as entities; those are decoded before escaping, so
    they display as the characters the sender meant.

    >>> mrkdwn_to_html("*Anomaly* on <http://x/m/2|machine2> &lt;script&gt;")
    '<strong>Anomaly</strong> on <a href="http://x/m/2" rel="noopener noreferrer" target="_blank">machine2</a> &lt;script&gt;'
    >>> mrkdwn_to_html("<javascript:alert(1)|click>")
    'javascript:alert(1) (click)'
    >>> mrkdwn_to_html("<script>x</script>")
    '&lt;script&gt;x&lt;/script&gt;'
    >>> mrkdwn_to_html("score `0.97` _high_ ~ok~")
    'score <code>0.97</code> <em>high</em> <s>ok</s>'
    """
    pieces: list[str] = []

    def hold(fragment: str) -> str:
        pieces.append(fragment)
        return f"\x00{len(pieces) - 1}\x00"

    def link(match: re.Match[str]) -> str:
        target, label = match.group(1), match.group(2)
        if not _SCHEME.match(target) and target[0] not in "@#!":
            # Not a Slack control sequence (e.g. an unescaped "<script>"): show it as written.
            return hold(html.escape(match.group(0)))
        url = safe_url(target) if _SCHEME.match(target) else None
        if url is None:
            # Mentions (<@U123>, <#C1|general>, <!here>) and unsafe schemes stay readable text.
            shown = f"{target} ({label})" if label else target
            return hold(html.escape(_slack_unescape(shown)))
        if images is not None and is_plot_image(url) and url not in images:
            images.append(url)
        shown_label = plain_to_html(_slack_unescape(label)) if label else html.escape(url)
        return hold(
            f'<a href="{html.escape(url)}" rel="noopener noreferrer" target="_blank">'
            f"{shown_label}</a>"
        )

    text = text.replace("\x00", "")
    text = _LINK.sub(link, text)
    text = _CODE_BLOCK.sub(
        lambda m: hold(f"<pre>{html.escape(_slack_unescape(m.group(1)))}</pre>"), text
    )
    text = _CODE_SPAN.sub(
        lambda m: hold(f"<code>{html.escape(_slack_unescape(m.group(1)))}</code>"), text
    )
    escaped = _emoji(html.escape(_slack_unescape(text)))
    escaped = _BOLD.sub(r"<strong>\1</strong>", escaped)
    escaped = _ITALIC.sub(r"<em>\1</em>", escaped)
    escaped = _STRIKE.sub(r"<s>\1</s>", escaped)
    # Placeholders can nest (a link inside a code span is not expected, but stay correct).
    while _PLACEHOLDER.search(escaped):
        escaped = _PLACEHOLDER.sub(lambda m: pieces[int(m.group(1))], escaped)
    return escaped


def _slack_unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def text_object_to_html(obj: object, images: list[str]) -> str:
    """A Block Kit text object (`mrkdwn` or `plain_text`) as HTML; anything else: empty."""
    if not isinstance(obj, Mapping) or not isinstance(obj.get("text"), str):
        return ""
    if obj.get("type") == "mrkdwn":
        return mrkdwn_to_html(obj["text"], images)
    return plain_to_html(obj["text"])


def _image_html(url: object, alt: object, css_class: str) -> str:
    if not isinstance(url, str) or (safe := safe_url(url)) is None:
        return ""
    alt_text = html.escape(alt if isinstance(alt, str) else "")
    return f'<img class="{css_class}" src="{html.escape(safe)}" alt="{alt_text}" loading="lazy">'


def _button_html(element: Mapping[str, Any], images: list[str]) -> str:
    label = text_object_to_html(element.get("text"), images) or "button"
    url = element.get("url")
    if isinstance(url, str) and (safe := safe_url(url)):
        if is_plot_image(safe) and safe not in images:
            images.append(safe)
        return (
            f'<a class="button" href="{html.escape(safe)}" rel="noopener noreferrer" '
            f'target="_blank">{label}</a>'
        )
    return f'<span class="button inert">{label}</span>'


def _rich_text_html(elements: object, images: list[str]) -> str:
    parts: list[str] = []
    for element in elements if isinstance(elements, list) else []:
        if not isinstance(element, Mapping):
            continue
        kind = element.get("type")
        if kind == "text" and isinstance(element.get("text"), str):
            parts.append(html.escape(element["text"]))
        elif kind == "link" and isinstance(element.get("url"), str):
            parts.append(mrkdwn_to_html(f"<{element['url']}|{element.get('text') or ''}>", images))
        elif kind == "emoji" and isinstance(element.get("name"), str):
            parts.append(EMOJI.get(element["name"], f":{html.escape(element['name'])}:"))
        elif "elements" in element:
            parts.append(_rich_text_html(element["elements"], images))
            if kind in ("rich_text_section", "rich_text_preformatted", "rich_text_quote"):
                parts.append("\n")
    return "".join(parts)


def block_to_html(block: object, images: list[str]) -> str:
    """One Block Kit block as HTML; an unknown or malformed block as its JSON."""
    try:
        return _block_to_html(block, images)
    except (AttributeError, TypeError, KeyError, ValueError):
        return _raw_json(block)


def _block_to_html(block: object, images: list[str]) -> str:
    if not isinstance(block, Mapping):
        return _raw_json(block)
    kind = block.get("type")
    if kind == "header":
        return f'<h3 class="b-header">{text_object_to_html(block["text"], images)}</h3>'
    if kind == "divider":
        return '<hr class="b-divider">'
    if kind == "section":
        parts = ['<div class="b-section"><div class="b-main">']
        if "text" in block:
            parts.append(f'<div class="mrkdwn">{text_object_to_html(block["text"], images)}</div>')
        fields = _items(block.get("fields", []))
        if fields:
            cells = "".join(
                f'<div class="mrkdwn">{text_object_to_html(field, images)}</div>'
                for field in fields
            )
            parts.append(f'<div class="b-fields">{cells}</div>')
        parts.append("</div>")
        accessory = block.get("accessory")
        if isinstance(accessory, Mapping):
            if accessory.get("type") == "image":
                parts.append(
                    _image_html(accessory.get("image_url"), accessory.get("alt_text"), "b-thumb")
                )
            elif accessory.get("type") == "button":
                parts.append(_button_html(accessory, images))
        parts.append("</div>")
        return "".join(parts)
    if kind == "context":
        items = []
        for element in _items(block["elements"]):
            if isinstance(element, Mapping) and element.get("type") == "image":
                items.append(
                    _image_html(element.get("image_url"), element.get("alt_text"), "b-icon")
                )
            else:
                items.append(f"<span>{text_object_to_html(element, images)}</span>")
        return f'<div class="b-context">{"".join(items)}</div>'
    if kind == "image":
        title = text_object_to_html(block.get("title"), images)
        caption = f"<figcaption>{title}</figcaption>" if title else ""
        image = _image_html(block["image_url"], block.get("alt_text"), "b-image")
        return f'<figure class="b-figure">{image}{caption}</figure>' if image else _raw_json(block)
    if kind == "actions":
        buttons = "".join(
            _button_html(element, images)
            for element in _items(block["elements"])
            if isinstance(element, Mapping)
        )
        return f'<div class="b-actions">{buttons}</div>'
    if kind == "rich_text":
        return f'<div class="mrkdwn">{_rich_text_html(_items(block["elements"]), images)}</div>'
    return _raw_json(block)


def _items(value: object) -> list[Any]:
    """A list field of a block; anything else makes the block render as raw JSON."""
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return value


def _raw_json(value: object) -> str:
    kind = value.get("type") if isinstance(value, Mapping) else None
    label = f"unsupported block: {kind}" if isinstance(kind, str) else "unsupported block"
    dumped = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return f'<details class="b-raw"><summary>{html.escape(label)}</summary><pre>{html.escape(dumped)}</pre></details>'


ATTACHMENT_COLORS = {"good": "good", "warning": "warning", "danger": "danger"}


def attachment_to_html(attachment: object, images: list[str]) -> str:
    """A legacy attachment: a coloured bar with its pretext, title, text, fields and blocks."""
    if not isinstance(attachment, Mapping):
        return _raw_json(attachment)
    tone = ATTACHMENT_COLORS.get(str(attachment.get("color", "")), "neutral")
    parts = [f'<div class="attachment {tone}">']
    for key, tag in (("pretext", "p"), ("title", "strong"), ("text", "div")):
        value = attachment.get(key)
        if isinstance(value, str) and value:
            parts.append(f'<{tag} class="mrkdwn">{mrkdwn_to_html(value, images)}</{tag}>')
    fields = [f for f in attachment.get("fields") or [] if isinstance(f, Mapping)]
    if fields:
        cells = "".join(
            f"<div><strong>{html.escape(str(f.get('title', '')))}</strong>"
            f'<div class="mrkdwn">{mrkdwn_to_html(str(f.get("value", "")), images)}</div></div>'
            for f in fields
        )
        parts.append(f'<div class="b-fields">{cells}</div>')
    parts.extend(block_to_html(b, images) for b in attachment.get("blocks") or [])
    parts.append(_image_html(attachment.get("image_url"), attachment.get("fallback"), "b-image"))
    parts.append("</div>")
    return "".join(parts)


def message_to_html(message: InboxMessage) -> str:
    """One received message as an `<article>`: time, key, text, blocks, inline plot images."""
    payload = message.payload
    images: list[str] = []
    text = payload.get("text")
    parts = [
        '<article class="message">',
        '<header class="meta">',
        f'<time datetime="{html.escape(message.received_at)}">'
        f"{html.escape(message.received_at.replace('T', ' ')[:19])} UTC</time>",
    ]
    if message.idempotency_key:
        parts.append(f'<span class="key">{html.escape(message.idempotency_key)}</span>')
    parts.append("</header>")
    blocks = payload.get("blocks")
    if isinstance(text, str) and text.strip():
        # With blocks, Slack shows `text` only in notifications: keep it, but quieter.
        if isinstance(blocks, list) and blocks:
            css, title = "text fallback mrkdwn", ' title="notification text"'
        else:
            css, title = "text mrkdwn", ""
        parts.append(f'<div class="{css}"{title}>{mrkdwn_to_html(text, images)}</div>')
    if isinstance(blocks, list) and blocks:
        parts.append('<div class="blocks">')
        parts.extend(block_to_html(block, images) for block in blocks)
        parts.append("</div>")
    attachments = payload.get("attachments")
    if isinstance(attachments, list):
        parts.extend(attachment_to_html(a, images) for a in attachments)
    if images:
        parts.append('<div class="plots">')
        parts.extend(
            f'<a href="{html.escape(url)}" target="_blank" rel="noopener noreferrer">'
            f'<img class="plot" src="{html.escape(url)}" alt="plot" loading="lazy"></a>'
            for url in images
        )
        parts.append("</div>")
    parts.append("</article>")
    return "".join(parts)


def messages_html(messages: Sequence[InboxMessage]) -> str:
    """The list part of the page (newest first), also what the page swaps in on refresh."""
    if not messages:
        return (
            '<p class="empty">No alerts yet. Under <code>make run</code> the pipeline sends its '
            "alerts here by itself: switch a fault on in the machine simulator's page and the "
            "first message arrives within a run or two (a new machine's detector first needs "
            "about four minutes of its data). Anything else can post a Slack webhook body to "
            "<code>/hook</code>.</p>"
        )
    newest = list(reversed(messages))[:PAGE_LIMIT]
    note = ""
    if len(messages) > PAGE_LIMIT:
        note = (
            f'<p class="note">Showing the newest {PAGE_LIMIT} of {len(messages)} messages; '
            'all of them are in <a href="/api/messages">/api/messages</a>.</p>'
        )
    return note + "".join(message_to_html(m) for m in newest)


def count_text(count: int) -> str:
    """
    >>> count_text(1), count_text(3)
    ('1 message', '3 messages')
    """
    return f"{count} message{'' if count == 1 else 's'}"


def render_page(
    messages: Sequence[InboxMessage], hook_url: str, nonce: str, fleet_url: str = ""
) -> str:
    """The whole page. `nonce` is the CSP nonce the server sent for this response; `fleet_url`
    (the fleet status page), when an http(s) URL, is linked from the header."""
    count = len(messages)
    fleet = ""
    if fleet_url.startswith(("http://", "https://")):
        fleet = f'<a id="fleet-link" href="{html.escape(fleet_url)}">fleet status</a>'

    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Local inbox ({count})</title>
<noscript><meta http-equiv="refresh" content="10"></noscript>
<style nonce="{nonce}">{STYLE}</style>
</head>
<body>
<header class="top">
  <h1>Local inbox</h1>
  <span class="sub">stands in for Slack &middot; <span id="count">{count_text(count)}</span>
  &middot; webhook <code>POST {html.escape(hook_url)}</code></span>
  {fleet}
  <span id="live" class="live" title="refreshes every {REFRESH_SECONDS} s">live</span>
</header>
<main id="messages" data-count="{count}">{messages_html(messages)}</main>
<script nonce="{nonce}">{SCRIPT}</script>
</body>
</html>
"""


STYLE = """
:root { color-scheme: light; --fg: #1d1c1d; --muted: #616061; --line: #e8e8e8; --accent: #1264a3; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); background: #f8f8f8; }
.top { position: sticky; top: 0; z-index: 1; display: flex; align-items: baseline; gap: 12px;
       flex-wrap: wrap; padding: 12px 24px; background: #3f0e40; color: #fff; }
.top h1 { margin: 0; font-size: 18px; }
.top .sub { color: #e0d4e0; font-size: 13px; }
.top code { color: #fff; background: rgba(255,255,255,.14); border-color: transparent; }
#fleet-link { color: #fff; font-size: 13px; }
.live { margin-left: auto; font-size: 12px; padding: 2px 8px; border-radius: 10px; background: #2bac76; }
.live.offline { background: #e01e5a; }
main { max-width: 920px; margin: 0 auto; padding: 16px 24px 48px; }
.empty, .note { color: var(--muted); }
.message { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px;
           margin: 0 0 12px; box-shadow: 0 1px 2px rgba(0,0,0,.04); }
.meta { display: flex; gap: 10px; align-items: center; font-size: 12px; color: var(--muted); margin-bottom: 4px; }
.key { font-family: ui-monospace, Menlo, Consolas, monospace; background: #f2f2f2; border-radius: 4px; padding: 0 6px; }
.mrkdwn { white-space: pre-wrap; overflow-wrap: anywhere; }
.text { font-weight: 600; }
.text.fallback { font-weight: 400; font-size: 13px; color: var(--muted); }
.blocks { margin-top: 6px; }
.b-header { margin: 8px 0 4px; font-size: 17px; }
.b-divider { border: 0; border-top: 1px solid var(--line); margin: 10px 0; }
.b-section { display: flex; gap: 12px; margin: 6px 0; }
.b-main { flex: 1; min-width: 0; }
.b-fields { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 6px 16px; margin-top: 6px; }
.b-context { display: flex; gap: 8px; align-items: center; color: var(--muted); font-size: 13px; margin: 6px 0; }
.b-icon { width: 16px; height: 16px; border-radius: 3px; }
.b-thumb { width: 88px; height: 88px; object-fit: cover; border-radius: 6px; }
.b-figure { margin: 8px 0; }
.b-figure figcaption { color: var(--muted); font-size: 13px; }
.b-image, .plot { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; background: #fff; }
.plots { display: grid; gap: 8px; margin-top: 10px; }
.b-actions { display: flex; gap: 8px; flex-wrap: wrap; margin: 8px 0; }
.button { display: inline-block; padding: 4px 12px; border: 1px solid #bbb; border-radius: 4px; color: var(--fg);
          text-decoration: none; font-size: 13px; font-weight: 600; background: #fff; }
.button.inert { color: var(--muted); }
.b-raw summary { color: var(--muted); font-size: 13px; cursor: pointer; }
.attachment { border-left: 4px solid #ddd; padding: 4px 0 4px 12px; margin: 8px 0; }
.attachment.good { border-color: #2eb67d; } .attachment.warning { border-color: #ecb22e; }
.attachment.danger { border-color: #e01e5a; }
a { color: var(--accent); }
code, pre { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px; background: #f6f6f6;
            border: 1px solid var(--line); border-radius: 4px; }
code { padding: 0 3px; } pre { padding: 8px; margin: 6px 0; white-space: pre-wrap; }
"""

# Polls the message count; when it changes, fetches the page and swaps the list in place
# (keeps scroll position, no flicker); shows "offline" while the inbox does not answer.
SCRIPT = """
(function () {
  const main = document.getElementById("messages");
  const live = document.getElementById("live");
  const countEl = document.getElementById("count");
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      const when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when)) { el.title = el.textContent; el.textContent = when.toLocaleString(); }
    });
  }
  async function refresh() {
    try {
      const status = await (await fetch("/api/status", {cache: "no-store"})).json();
      live.textContent = "live"; live.classList.remove("offline");
      if (String(status.count) !== main.dataset.count) {
        const page = await (await fetch("/", {cache: "no-store"})).text();
        const doc = new DOMParser().parseFromString(page, "text/html");
        const fresh = doc.getElementById("messages");
        main.innerHTML = fresh.innerHTML;
        main.dataset.count = fresh.dataset.count;
        countEl.textContent = doc.getElementById("count").textContent;
        document.title = doc.title;
        localTimes(main);
      }
    } catch (error) {
      live.textContent = "offline"; live.classList.add("offline");
    }
  }
  localTimes(main);
  setInterval(refresh, REFRESH_MS);
})();
""".replace("REFRESH_MS", str(REFRESH_SECONDS * 1000))
