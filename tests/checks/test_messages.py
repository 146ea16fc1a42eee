"""A check's finding as a Slack message and in a digest: the detector's contract (Anomaly /
Resolved, machineID and unique_id), the check's name, what it found and how it was decided."""

from __future__ import annotations

from influx_magic.alerts import CheckAlert
from influx_magic.alerts.slack import digest_message, episode_message
from influx_magic.checks.findings import CheckEpisode, CheckEvent

T = 1714557600_000_000_000  # 2024-05-01 10:00 UTC
WINDOW = {
    "formula": "z = (mean(window) - mean(control)) / std(control)",
    "computed": "z = (50.00 - 40.00) / 1.00 = 10.00",
    "test": "|z| > 3",
}


def alert(kind: str, machine: str = "machine2", **changes: object) -> CheckAlert:
    fields: dict = {
        "check": "warmer",
        "check_kind": "window_test",
        "unique_id": f"acme-{machine}",
        "machine_id": machine,
        "provider": "Acme <&> Co",
        "episode_id": f"ep-{machine}",
        "start": T,
        "end": T + 45 * 10**9,
        "value": 10.0,
        "summary": "temperature: z = (50.00 - 40.00) / 1.00 = 10.00, beyond |z| > 3",
        "details": {"first": WINDOW, "worst": WINDOW},
    }
    fields.update(changes)
    episode = CheckEpisode(**fields)
    if kind == "resolved":
        episode.resolution = "z = 0.40 within ±3"
    return CheckAlert(CheckEvent(kind, T, episode))  # type: ignore[arg-type]


def test_an_opened_finding_names_the_check_and_shows_how_it_was_decided() -> None:
    message = episode_message(alert("opened"), plot_url="http://p/x.png", run_url="http://m/r/1")
    assert message["text"] == (
        "Anomaly on machine2 (acme-machine2) since 2024-05-01 10:00:00 UTC: check warmer "
        "(window_test): temperature: z = (50.00 - 40.00) / 1.00 = 10.00, beyond |z| > 3"
    )
    text = str(message["blocks"])
    assert "z = (mean(window) - mean(control)) / std(control)" in text
    assert "Acme &lt;&amp;&gt; Co" in text  # escaped for mrkdwn
    assert "http://p/x.png" in text and "http://m/r/1" in text


def test_a_resolved_finding_says_why_and_how_long() -> None:
    message = episode_message(alert("resolved"))
    assert message["text"] == (
        "Resolved on machine2 (acme-machine2) at 2024-05-01 10:00:45 UTC after 45 s: "
        "check warmer (window_test), z = 0.40 within ±3"
    )
    assert "*Resolved because*" in str(message["blocks"])


def test_a_digest_lists_findings_with_their_checks() -> None:
    events = [alert("opened", f"m{i}") for i in range(12)]
    message = digest_message(events)
    assert message["text"].startswith("Anomaly on 12 machines: m0 (acme-m0)")
    assert str(message).count("check warmer:") == 12


def test_a_recurring_finding_says_how_often() -> None:
    finding = alert("opened")
    finding.event.episode.bursts, finding.event.episode.follow_ups = 3, 1
    recurring = CheckAlert(CheckEvent("recurring", T, finding.event.episode))
    assert recurring.key == "ep-machine2:recurring:1"
    assert episode_message(recurring)["text"].startswith(
        "Still recurring on machine2 (acme-machine2): check warmer (window_test), 3 times since "
        "2024-05-01 10:00:00 UTC: temperature: z ="
    )
