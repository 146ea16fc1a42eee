"""Alert messages and their delivery to a real local webhook (the `slack_receiver` fixture)."""

from __future__ import annotations

import json
import logging
import traceback
from datetime import timedelta
from pathlib import Path

import pytest

from fleetwatch.episodes import EpisodeEvent
from influx_magic.alerts import (
    Alert,
    AlertDelivery,
    DeliveryError,
    RetryPolicy,
    SlackWebhookNotifier,
    StoreError,
)
from influx_magic.alerts.slack import episode_message, seconds_text
from influx_magic.alerts.store import Ledger
from tests.pipeline_lib.helpers import START, event
from tests.support import free_port

FAST = RetryPolicy(attempts=2, backoff=0.01, max_backoff=0.02)


def delivery(url: str, state: Path, **options: object) -> AlertDelivery:
    """A fresh delivery object is what a new pipeline run creates: nothing kept in memory."""
    return AlertDelivery(SlackWebhookNotifier(url), state, **{"retry": FAST, **options})


def block_text(message: dict) -> str:
    return json.dumps(message["blocks"], ensure_ascii=False)


# --- messages -----------------------------------------------------------------------------


def test_anomaly_message_names_machine_and_shows_what_moved() -> None:
    message = episode_message(
        event(),
        plot_url="http://127.0.0.1:5006/plots/acme-inc-machine2.png",
        run_url="http://127.0.0.1:6789/pipelines/p/runs/7",
    )
    text = message["text"]
    assert text.startswith("Anomaly")
    assert "machine2" in text and "acme-inc-machine2" in text
    blocks = block_text(message)
    for expected in (
        "2024-05-01 10:00:00 UTC",  # start
        "0.93",  # peak score
        "threshold 0.80",
        "200 %",  # load at the peak, with its unit
        "455.50 W",
        "load (+4.20), vibration (+3.10)",  # features that moved, most first
        "<http://127.0.0.1:5006/plots/acme-inc-machine2.png|Plot>",
        "<http://127.0.0.1:6789/pipelines/p/runs/7|Mage run>",
    ):
        assert expected in blocks, expected
    assert message["blocks"][0]["type"] == "header"


def test_the_message_says_in_words_how_unusual_the_sensors_that_moved_are() -> None:
    from dataclasses import replace

    alert = event()
    words = [
        "load 19.4 deviations above its usual level",
        "vibration 7.2 deviations above its usual level for this load",
    ]
    worded = replace(
        alert, event=replace(alert.event, episode=replace(alert.event.episode, moved=words))
    )
    blocks = block_text(episode_message(worded))
    assert all(line in blocks for line in words)
    assert "load (+4.20)" not in blocks  # the words replace the bare numbers


def test_resolved_message_says_when_and_omits_missing_links() -> None:
    message = episode_message(event(kind="resolved"), plot_url=None, run_url=None)
    assert message["text"].startswith("Resolved")
    assert "machine2" in message["text"] and "acme-inc-machine2" in message["text"]
    assert "after 7 min," in message["text"]
    assert "Mage run" not in block_text(message) and "Plot" not in block_text(message)


def test_follow_ups_and_held_back_alerts_say_so() -> None:
    recurring = event(kind="recurring", bursts=5, follow_ups=1)
    message = episode_message(recurring, plot_url=None, run_url=None)
    assert message["text"].startswith("Still recurring on machine2 (acme-inc-machine2): 5 bursts")
    assert recurring.key == "machine2-20240501T100000:recurring:1"  # one key per follow-up
    assert "*Bursts*\\n5" in block_text(message)

    held = event(delayed_by=timedelta(minutes=3))
    text = episode_message(held, plot_url=None, run_url=None)["text"]
    assert text.startswith("Anomaly on machine2")
    assert text.endswith("(held back by the cooldown until 2024-05-01 10:03:00 UTC)")

    resolved = episode_message(event(kind="resolved", bursts=3), plot_url=None, run_url=None)
    assert resolved["text"].endswith("peak score 0.93, 3 bursts")


def test_durations_and_units_read_the_same_everywhere() -> None:
    assert [seconds_text(s) for s in (9, 162, 600, 3900)] == [
        "9 s",
        "2 min 42 s",
        "10 min",
        "1 h 5 min",
    ]
    blocks = block_text(episode_message(event(), plot_url=None, run_url=None))
    assert "load: 200 %" in blocks and "power: 455.50 W" in blocks


def test_message_escapes_slack_control_characters() -> None:
    message = episode_message(
        event(machine="m<1>&", provider="Smith & <Sons>"), plot_url=None, run_url=None
    )
    blocks = block_text(message)
    assert "Smith &amp; &lt;Sons&gt;" in blocks
    assert "m&lt;1&gt;&amp;" in blocks
    assert "<Sons>" not in blocks


def test_an_alert_is_the_episode_event_unchanged_and_survives_json() -> None:
    alert = event(kind="resolved", provider="Acme Inc")
    again = Alert.from_json(json.loads(json.dumps(alert.to_json())))
    assert again == alert and again.event == alert.event
    assert again.key == "machine2-20240501T100000:resolved"
    assert again.start == START and (again.end - again.start).total_seconds() == 420
    assert again.top_features == (("load", 4.2), ("vibration", 3.1))
    assert event().end is None  # an open episode has no end yet


def test_an_alert_is_an_opening_or_a_resolution() -> None:
    with pytest.raises(ValueError, match="an alert is one of"):
        Alert(EpisodeEvent("closed", 0, event().event.episode), "machine2")


# --- delivery -----------------------------------------------------------------------------


def test_each_event_is_delivered_once_across_runs(slack_receiver, tmp_path: Path) -> None:
    first = delivery(slack_receiver.url, tmp_path).run([event(), event("machine3")])
    assert first.sent == ["machine2-20240501T100000:opened", "machine3-20240501T100000:opened"]

    # The next run sees the same events again (a re-done run) plus one resolution.
    second = delivery(slack_receiver.url, tmp_path).run(
        [event(), event("machine3"), event(kind="resolved")]
    )
    assert second.sent == ["machine2-20240501T100000:resolved"]
    assert sorted(second.already_delivered) == sorted(first.sent)

    keys = [r.headers["Idempotency-Key"] for r in slack_receiver.requests]
    assert keys == [
        "machine2-20240501T100000:opened",
        "machine3-20240501T100000:opened",
        "machine2-20240501T100000:resolved",
    ]
    texts = [p["text"] for p in slack_receiver.payloads()]
    assert [t.split()[0] for t in texts] == ["Anomaly", "Anomaly", "Resolved"]
    assert all(
        r.headers["Content-Type"].startswith("application/json") for r in slack_receiver.requests
    )


def test_failing_webhook_queues_to_outbox_then_delivers_once(slack_receiver, tmp_path) -> None:
    slack_receiver.respond_with(500, "internal_error", times=FAST.attempts)
    first = delivery(slack_receiver.url, tmp_path).run([event(), event("machine3")])
    assert first.sent == []
    assert first.queued == ["machine2-20240501T100000:opened", "machine3-20240501T100000:opened"]
    assert first.outbox_left == 2 and not first.ok
    # Retried, then the target counted as down: machine3's message was not even tried.
    assert len(slack_receiver.requests) == FAST.attempts
    assert "HTTP 500" in first.errors[0]

    second = delivery(slack_receiver.url, tmp_path).run([event()])  # re-emitted: not doubled
    assert second.sent == ["machine2-20240501T100000:opened", "machine3-20240501T100000:opened"]
    assert second.ok
    third = delivery(slack_receiver.url, tmp_path).run([event(), event("machine3")])
    assert third.sent == [] and third.messages_sent == 0

    delivered = slack_receiver.requests[FAST.attempts :]
    assert [r.headers["Idempotency-Key"] for r in delivered] == [
        "machine2-20240501T100000:opened",
        "machine3-20240501T100000:opened",
    ]


def test_rejected_message_stays_queued_and_others_still_go(slack_receiver, tmp_path) -> None:
    slack_receiver.respond_with(400, "invalid_blocks")
    report = delivery(slack_receiver.url, tmp_path).run([event(), event("machine3")])
    assert report.sent == ["machine3-20240501T100000:opened"]
    assert report.queued == ["machine2-20240501T100000:opened"]
    assert len(slack_receiver.requests) == 2  # a 400 is not retried within the run
    outbox = json.loads((tmp_path / "alerts/slack/outbox.json").read_text())
    assert "HTTP 400 invalid_blocks" in outbox["messages"][0]["last_error"]


def test_rate_limit_waits_for_retry_after_then_delivers_once(slack_receiver, tmp_path) -> None:
    slack_receiver.respond_with(429, "rate_limited", headers={"Retry-After": "2"})
    report = delivery(slack_receiver.url, tmp_path, retry=RetryPolicy(attempts=3)).run([event()])
    assert report.sent == ["machine2-20240501T100000:opened"] and report.ok
    first, second = slack_receiver.requests
    assert second.received_at - first.received_at >= 1.95
    assert first.body == second.body
    assert second.headers["Idempotency-Key"] == "machine2-20240501T100000:opened"


def test_too_long_retry_after_leaves_the_message_for_the_next_run(slack_receiver, tmp_path):
    slack_receiver.respond_with(429, "rate_limited", headers={"Retry-After": "3600"})
    report = delivery(slack_receiver.url, tmp_path).run([event()])
    assert report.queued == ["machine2-20240501T100000:opened"]
    assert len(slack_receiver.requests) == 1


def test_many_machines_opening_get_one_digest(slack_receiver, tmp_path: Path) -> None:
    machines = [f"machine{i}" for i in range(1, 12)]  # 11 > ALERT_DIGEST_MIN's default 10
    report = delivery(slack_receiver.url, tmp_path).run([event(m) for m in machines])
    assert report.messages_sent == 1 and len(report.sent) == 11
    (digest,) = slack_receiver.payloads()
    assert digest["text"].startswith("Anomaly on 11 machines")
    for machine in machines:
        assert f"{machine} (acme-inc-{machine})" in digest["text"]
        assert f"*{machine}*" in block_text(digest)
    assert slack_receiver.requests[0].headers["Idempotency-Key"].startswith("digest:opened:")

    # Every event the digest covered is in the ledger: none is announced again on its own.
    again = delivery(slack_receiver.url, tmp_path).run([event("machine5")])
    assert again.sent == [] and again.already_delivered == ["machine5-20240501T100000:opened"]


def test_digest_threshold_is_more_than_digest_min(slack_receiver, tmp_path: Path) -> None:
    events = [event(f"machine{i}") for i in range(3)]
    report = delivery(slack_receiver.url, tmp_path, digest_min=3).run(events)
    assert report.messages_sent == 3
    report = delivery(slack_receiver.url, tmp_path / "other", digest_min=2).run(events)
    assert report.messages_sent == 1


def test_digest_of_a_large_fleet_stays_within_block_kit_limits(slack_receiver, tmp_path) -> None:
    events = [event(f"machine{i}") for i in range(400)]
    delivery(slack_receiver.url, tmp_path).run(events)
    (digest,) = slack_receiver.payloads()
    assert len(digest["blocks"]) <= 50
    assert all(len(b.get("text", {}).get("text", "")) <= 3000 for b in digest["blocks"])
    assert "machine399 (acme-inc-machine399)" in digest["text"]


def test_webhook_url_never_appears_in_logs_errors_or_reprs(
    slack_receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret_path = "/services/T0SECRET/B0SECRET/xoxSECRETtoken"
    working = f"{slack_receiver.url.removesuffix('/hook')}{secret_path}"
    refused = f"http://127.0.0.1:{free_port()}{secret_path}"

    slack_receiver.respond_with(500, "internal_error", times=FAST.attempts)
    failed = delivery(working, tmp_path).run([event()])
    down = delivery(refused, tmp_path / "down").run([event()])
    notifier = SlackWebhookNotifier(refused)
    with pytest.raises(DeliveryError) as raised:
        notifier.send("k", {"text": "x"})

    assert slack_receiver.requests[0].path == secret_path  # the real URL was used
    assert any(r.name.startswith("urllib3") for r in caplog.records)  # the HTTP stack did log
    exposed = "\n".join(
        [
            caplog.text,
            *failed.errors,
            *down.errors,
            repr(notifier),
            str(notifier._url),
            "".join(traceback.format_exception(raised.value)),
            (tmp_path / "down/alerts/slack/outbox.json").read_text(),
        ]
    )
    assert "SECRET" not in exposed
    assert "ConnectionError" in down.errors[0] and "127.0.0.1/***" in down.errors[0]


def test_invalid_webhook_url_is_rejected_without_echoing_it() -> None:
    with pytest.raises(ValueError, match="must start with http") as raised:
        SlackWebhookNotifier("hooks.slack.com/services/T0/B0/abcdefSECRET")
    assert "SECRET" not in str(raised.value)


def test_notifier_from_settings() -> None:
    assert not SlackWebhookNotifier.from_settings({"SLACK_WEBHOOK_URL": ""}).configured
    notifier = SlackWebhookNotifier.from_settings({"SLACK_WEBHOOK_URL": "https://h.example/x/y/z"})
    assert repr(notifier) == "SlackWebhookNotifier(url='https://h.example/***')"


def test_corrupt_ledger_is_an_error_not_a_fresh_start(slack_receiver, tmp_path: Path) -> None:
    delivery(slack_receiver.url, tmp_path).run([event()])
    ledger = tmp_path / "alerts/slack/ledger.json"
    ledger.write_text("{not json")
    with pytest.raises(StoreError, match=str(ledger)):
        delivery(slack_receiver.url, tmp_path)
    assert len(slack_receiver.requests) == 1


def test_ledger_forgets_keys_after_retention(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.json", retention_days=1)
    ledger.add(["old"], now=0.0)
    ledger.add(["new"], now=2 * 86400.0)
    reloaded = Ledger(tmp_path / "ledger.json")
    assert "new" in reloaded and "old" not in reloaded
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files


def test_without_a_channel_alerts_wait_and_the_next_run_with_one_sends_them_once_in_order(
    slack_receiver, tmp_path: Path
) -> None:
    nowhere = AlertDelivery(SlackWebhookNotifier(None), tmp_path, retry=FAST)
    first = nowhere.run([event()])
    assert first.sent == [] and first.queued == ["machine2-20240501T100000:opened"]
    assert first.not_configured == "SLACK_WEBHOOK_URL is empty" and first.outbox_left == 1
    second = AlertDelivery(SlackWebhookNotifier(None), tmp_path).run([event(kind="resolved")])
    assert second.outbox_left == 2

    third = delivery(slack_receiver.url, tmp_path).run([event(), event(kind="resolved")])
    assert third.sent == ["machine2-20240501T100000:opened", "machine2-20240501T100000:resolved"]
    assert [p["text"].split()[0] for p in slack_receiver.payloads()] == ["Anomaly", "Resolved"]
    again = delivery(slack_receiver.url, tmp_path).run([event(), event(kind="resolved")])
    assert again.sent == [] and len(slack_receiver.requests) == 2


def test_an_alert_sent_long_after_it_happened_is_marked_late(slack_receiver, tmp_path) -> None:
    happened = START.timestamp()
    for hours, late in ((23, False), (25, True)):
        report = AlertDelivery(
            SlackWebhookNotifier(slack_receiver.url),
            tmp_path / str(hours),
            late_after=24 * 3600,
            clock=lambda hours=hours: happened + hours * 3600,
        ).run([event()])
        assert report.sent and bool(report.late) == late
    on_time, marked = slack_receiver.payloads()
    assert "late" not in on_time["text"]
    assert marked["text"].startswith("Anomaly on machine2")
    assert marked["text"].endswith("(late: 25 h after it happened)")
    assert marked["blocks"][1]["type"] == "context" and "outbox" in block_text(marked)
