"""Slack message bodies for episode alerts: `text` for notifications, Block Kit for the channel.

`text` is what phones, screen readers and Slack-compatible receivers without Block Kit show, so
it carries the whole contract on its own: it starts with `Anomaly`, `Still recurring` (a
follow-up about the same episode) or `Resolved` and names the machineID and the unique_id. The blocks add what an operator needs to act without opening
anything: when it started, how bad it got, the sensor values at the peak, which features moved,
and links to the plot and the Mage run.

Everything interpolated into mrkdwn is escaped (`&`, `<`, `>`), so a provider called
"Smith & <Sons>" cannot break the message or forge a link. Block Kit limits (header 150
characters, section text 3000, 10 fields, 50 blocks) are respected by construction, so a digest
for a large fleet is still a valid message.

>>> from fleetwatch.episodes import Episode, EpisodeEvent
>>> t = 1714557600_000_000_000  # 2024-05-01 10:00 UTC
>>> episode = Episode("acme-machine2", "ep-7", t, t, 0.934, t, {"load": 200, "power": 450.5},
...                   {"load": 4.2}, ["load"])
>>> event = Alert(EpisodeEvent("opened", t, episode), "machine2")
>>> message = episode_message(event, plot_url="http://127.0.0.1:5006/plots/acme-machine2.png")
>>> message["text"]
'Anomaly on machine2 (acme-machine2) since 2024-05-01 10:00:00 UTC, peak score 0.93'
>>> [block["type"] for block in message["blocks"]]
['header', 'section', 'section', 'section', 'section']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from influx_magic.alerts.events import Alert, CheckAlert
from influx_magic.units import format_number, format_value

HEADER_MAX = 150
SECTION_MAX = 3000
BLOCKS_MAX = 50
TEXT_MAX = 38_000  # Slack truncates `text` beyond 40,000 characters

_ICON = {"opened": ":red_circle:", "recurring": ":repeat:", "resolved": ":large_green_circle:"}
_WORD = {"opened": "Anomaly", "recurring": "Still recurring", "resolved": "Resolved"}


def episode_message(
    event: Alert | CheckAlert, *, plot_url: str | None = None, run_url: str | None = None
) -> dict[str, Any]:
    """The Slack body for one episode opening, recurring or resolving (a declared check's
    finding: `check_message`)."""
    if isinstance(event, CheckAlert):
        return check_message(event, plot_url=plot_url, run_url=run_url)
    word = _WORD[event.kind]
    who = f"{event.machine_id} ({event.unique_id})"
    if event.kind == "opened":
        text = f"{word} on {who} since {_when(event.start)}, peak score {event.peak_score:.2f}"
        if event.delayed:
            text += f" (held back by the cooldown until {_when(event.time)})"
    elif event.kind == "recurring":
        text = (
            f"{word} on {who}: {event.bursts} bursts since {_when(event.start)}, "
            f"peak score {event.peak_score:.2f}"
        )
    else:
        text = f"{word} on {who}{_ended(event)}"
        text += f", peak score {event.peak_score:.2f}"
        if event.bursts > 1:
            text += f", {event.bursts} bursts"

    fields = _span_fields(event)
    if event.bursts > 1:
        fields.append(f"*Bursts*\n{event.bursts}")
    score = f"*Peak score*\n{event.peak_score:.2f}"
    if event.threshold is not None:
        score += f" (threshold {event.threshold:.2f})"
    fields += [score, f"*Episode*\n`{_esc(event.episode_id)}`"]
    if event.provider:
        fields.append(f"*Provider*\n{_esc(event.provider)}")

    blocks: list[dict[str, Any]] = [
        _header(f"{_ICON[event.kind]} {word}: {event.machine_id}"),
        {"type": "section", "fields": [_mrkdwn(f) for f in fields[:10]]},
    ]
    if event.peak_values:
        lines = [
            f"• {_esc(name)}: {format_value(name, value)}"
            for name, value in _peak_order(event).items()
        ]
        blocks.append(_section("*Sensor values at the peak*\n" + "\n".join(lines)))
    if event.top_features:
        blocks.append(_section("*Features that moved most*\n" + _moved(event)))
    links = _links(plot_url, run_url)
    if links:
        blocks.append(_section(links))
    return {"text": text, "blocks": blocks}


def check_message(
    event: CheckAlert, *, plot_url: str | None = None, run_url: str | None = None
) -> dict[str, Any]:
    """The Slack body for a declared check's finding opening or resolving: the same contract
    as the detector's (`text` starts with Anomaly or Resolved and names the machineID and
    unique_id), then the check's name and kind, what it found, and how it was decided.

    >>> from influx_magic.checks.findings import CheckEpisode, CheckEvent
    >>> t = 1714557600_000_000_000
    >>> episode = CheckEpisode("overload", "limit", "acme-machine2", "machine2", "Acme", "c-1",
    ...     t, t, 200.0, "load above 150 for 30s: highest 200 %")
    >>> check_message(CheckAlert(CheckEvent("opened", t, episode)))["text"]
    'Anomaly on machine2 (acme-machine2) since 2024-05-01 10:00:00 UTC: check overload (limit): load above 150 for 30s: highest 200 %'
    """
    word = _WORD[event.kind]
    who = f"{event.machine_id} ({event.unique_id})"
    check = f"check {event.check} ({event.check_kind})"
    if event.kind == "opened":
        text = f"{word} on {who} since {_when(event.start)}: {check}: {event.summary}"
    elif event.kind == "recurring":
        text = (
            f"{word} on {who}: {check}, {event.bursts} times since {_when(event.start)}: "
            f"{event.summary}"
        )
    else:
        text = f"{word} on {who}{_ended(event)}"
        text += f": {check}, {event.resolution or 'resolved'}"
    fields = _span_fields(event)
    fields += [f"*Check*\n`{_esc(event.check)}` ({event.check_kind})"]
    fields += [f"*Episode*\n`{_esc(event.episode_id)}`"]
    if event.provider:
        fields.append(f"*Provider*\n{_esc(event.provider)}")
    blocks: list[dict[str, Any]] = [
        _header(f"{_ICON[event.kind]} {word}: {event.machine_id}, check {event.check}"),
        {"type": "section", "fields": [_mrkdwn(f) for f in fields[:10]]},
        _section(f"*Finding*\n{_esc(event.summary)}"),
    ]
    decided = event.event.episode.details.get("worst")
    if isinstance(decided, Mapping) and "formula" in decided:
        blocks.append(
            _section(
                f"*Test*\n`{_esc(decided['formula'])}`\n`{_esc(decided['computed'])}`, "
                f"alert when {_esc(decided['test'])}"
            )
        )
    if event.kind == "resolved" and event.resolution:
        blocks.append(_section(f"*Resolved because*\n{_esc(event.resolution)}"))
    links = _links(plot_url, run_url)
    if links:
        blocks.append(_section(links))
    return {"text": text, "blocks": blocks}


def _ended(event: Alert | CheckAlert) -> str:
    """` at <end> after <how long>` for an event whose episode has ended, else nothing."""
    if event.end is None:
        return ""
    return f" at {_when(event.end)} after {duration(event.start, event.end)}"


def _span_fields(event: Alert | CheckAlert) -> list[str]:
    """The fields every episode message opens with, detector's or check's: the machine, its
    series, and when the episode started (and ended, and how long it lasted)."""
    fields = [
        f"*Machine*\n{_esc(event.machine_id)}",
        f"*Series*\n`{_esc(event.unique_id)}`",
        f"*Started*\n{_when(event.start)}",
    ]
    if event.end is not None:
        fields += [f"*Ended*\n{_when(event.end)}", f"*Lasted*\n{duration(event.start, event.end)}"]
    return fields


def digest_message(
    events: Sequence[Alert | CheckAlert],
    *,
    plot_urls: Mapping[str, str] | None = None,
    run_url: str | None = None,
) -> dict[str, Any]:
    """One Slack body listing many episodes of the same kind, instead of one message each.

    >>> from fleetwatch.episodes import Episode, EpisodeEvent
    >>> events = [Alert(EpisodeEvent("opened", 0, Episode(f"acme-m{i}", f"e{i}", 0, 0, 0.9, 0,
    ...     {}, {}, [])), f"m{i}") for i in range(12)]
    >>> digest_message(events)["text"][:60]
    'Anomaly on 12 machines: m0 (acme-m0), m1 (acme-m1), m2 (acme'
    """
    if not events:
        raise ValueError("a digest needs at least one event")
    kinds = {event.kind for event in events}
    if len(kinds) != 1:
        raise ValueError(f"a digest holds one kind of event, got {sorted(kinds)}")
    kind = kinds.pop()
    word = _WORD[kind]
    plot_urls = plot_urls or {}
    count = f"{len(events)} machine{'s' if len(events) != 1 else ''}"
    text = f"{word} on {count}: " + _listed([f"{e.machine_id} ({e.unique_id})" for e in events])

    lines = []
    for event in events:
        line = f"• *{_esc(event.machine_id)}* `{_esc(event.unique_id)}`"
        line += f" since {_when(event.start)}" if kind != "resolved" else ""
        line += f", {event.bursts} bursts" if kind == "recurring" else ""
        if kind == "resolved" and event.end is not None:
            line += f" ended {_when(event.end)}"
        if isinstance(event, CheckAlert):
            line += f", check {_esc(event.check)}: {_esc(event.summary)}"
        else:
            line += f", peak {event.peak_score:.2f}"
        if isinstance(event, Alert) and event.top_features:
            line += " — " + ", ".join(_esc(name) for name, _ in event.top_features[:3])
        if event.key in plot_urls:
            line += f" <{_url(plot_urls[event.key])}|plot>"
        lines.append(line)

    blocks: list[dict[str, Any]] = [_header(f"{_ICON[kind]} {word} on {count}")]
    links = _links(None, run_url)
    room = BLOCKS_MAX - len(blocks) - (1 if links else 0)
    sections = list(_pack(lines, SECTION_MAX))
    if len(sections) > room:
        shown = sum(len(s) for s in sections[: room - 1])
        sections = sections[: room - 1] + [[f"…and {len(lines) - shown} more"]]
    blocks += [_section("\n".join(chunk)) for chunk in sections]
    if links:
        blocks.append(_section(links))
    return {"text": text, "blocks": blocks}


def late_message(payload: Mapping[str, Any], late_by: float) -> dict[str, Any]:
    """`payload` marked as late: the text says how long after the event it arrives, and a
    context block under the header says it waited in the outbox.

    >>> late = late_message({"text": "Anomaly on m1", "blocks": [_header("x")]}, 26 * 3600)
    >>> late["text"], late["blocks"][1]["elements"][0]["text"]
    ('Anomaly on m1 (late: 26 h after it happened)', ':hourglass: Late: 26 h after it happened; it waited in the outbox until an alert channel answered.')
    """
    note = f"{seconds_text(late_by)} after it happened"
    blocks = list(payload.get("blocks", []))
    if len(blocks) < BLOCKS_MAX:
        context = _mrkdwn(
            f":hourglass: Late: {note}; it waited in the outbox until an alert channel answered."
        )
        blocks.insert(1, {"type": "context", "elements": [context]})
    return {**payload, "text": f"{payload.get('text', '')} (late: {note})", "blocks": blocks}


def _listed(names: list[str], limit: int = TEXT_MAX) -> str:
    """Comma-separated names, ending in "and N more" rather than being cut mid-name.

    >>> _listed(["a", "b", "c"], limit=6)
    'a, b and 1 more'
    """
    shown: list[str] = []
    size = 0
    for name in names:
        if shown and size + len(name) + 2 > limit:
            return ", ".join(shown) + f" and {len(names) - len(shown)} more"
        shown.append(name)
        size += len(name) + 2
    return ", ".join(shown)


def _header(text: str) -> dict[str, Any]:
    if len(text) > HEADER_MAX:
        text = text[: HEADER_MAX - 1] + "…"
    return {"type": "header", "text": {"type": "plain_text", "text": text, "emoji": True}}


def _section(text: str) -> dict[str, Any]:
    if len(text) > SECTION_MAX:
        text = text[: SECTION_MAX - 1] + "…"
    return {"type": "section", "text": _mrkdwn(text)}


def _mrkdwn(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text}


def _esc(text: str) -> str:
    """Slack's mrkdwn escaping: only these three characters are control characters."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _url(url: str) -> str:
    """A URL inside `<url|label>`: `|` and `>` would end it early."""
    return url.replace("|", "%7C").replace(">", "%3E").replace("<", "%3C")


def _links(plot_url: str | None, run_url: str | None) -> str:
    parts = []
    if plot_url:
        parts.append(f":chart_with_upwards_trend: <{_url(plot_url)}|Plot>")
    if run_url:
        parts.append(f":gear: <{_url(run_url)}|Mage run>")
    return "   ".join(parts)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(start: datetime, end: datetime) -> str:
    """How long from `start` to `end`, as `seconds_text` writes it."""
    return seconds_text((end - start).total_seconds())


def seconds_text(seconds: float) -> str:
    """A duration in its two largest units, e.g. '45 s', '2 min 42 s', '12 min', '3 h 5 min'.

    >>> [seconds_text(s) for s in (45, 162, 720, 11100, 93600)]
    ['45 s', '2 min 42 s', '12 min', '3 h 5 min', '26 h']
    """
    seconds = max(0, round(seconds))
    parts = [(seconds // 3600, "h"), (seconds % 3600 // 60, "min"), (seconds % 60, "s")]
    first = next((i for i, (value, _) in enumerate(parts) if value), 2)
    shown = [f"{value} {unit}" for value, unit in parts[first : first + 2] if value]
    return " ".join(shown) or "0 s"


def _peak_order(event: Alert) -> dict[str, float]:
    """Peak values with the features that moved first, so the eye lands on the cause."""
    moved = [name for name, _ in event.top_features if name in event.peak_values]
    rest = [name for name in event.peak_values if name not in moved]
    return {name: event.peak_values[name] for name in moved + rest}


def _moved(event: Alert) -> str:
    if event.moved:
        return "\n".join(f"• {_esc(line)}" for line in event.moved)
    parts = []
    for name, deviation in event.top_features:
        if deviation is None:
            parts.append(_esc(name))
        else:
            sign = "+" if deviation >= 0 else "−"
            parts.append(f"{_esc(name)} ({sign}{format_number(abs(deviation))})")
    return ", ".join(parts)


def _pack(lines: Iterable[str], limit: int) -> Iterable[list[str]]:
    """Group lines into chunks whose joined length stays within `limit`."""
    chunk: list[str] = []
    size = 0
    for line in lines:
        line = line[:limit]
        if chunk and size + 1 + len(line) > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append(line)
        size += len(line) + (1 if size else 0)
    if chunk:
        yield chunk
