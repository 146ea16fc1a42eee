"""The inbox as a real process: Slack-compatible answers, the API, /plots, persistence."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.inbox.helpers import Inbox, get, make_png, post, post_json, raw_request
from tests.support import PYTHON, REPO_ROOT, http_ok, wait_until

ANOMALY = {
    "text": "Anomaly on machine2 (acme-machine2)",
    "blocks": [
        {"type": "header", "text": {"type": "plain_text", "text": "Anomaly on machine2"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "*peak score* 0.97"}},
    ],
}


def test_json_message_is_stored_with_its_idempotency_key(inbox: Inbox) -> None:
    status, body = post_json(inbox.hook, ANOMALY, {"Idempotency-Key": "ep-1:opened"})

    assert (status, body) == (200, "ok")
    [message] = inbox.messages()
    assert message["idempotency_key"] == "ep-1:opened"
    assert message["text"] == ANOMALY["text"]
    assert message["payload"] == ANOMALY
    assert set(message) == {"received_at", "idempotency_key", "text", "payload"}


def test_mage_failure_notice_without_content_type_is_accepted(inbox: Inbox) -> None:
    # Exactly how mage_ai.services.slack sends it: a JSON string body, no Content-Type.
    notice = {
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "Mage Notification"}},
            {"type": "divider"},
            {"type": "section", "text": {"type": "mrkdwn", "text": "Failed to run pipeline"}},
        ]
    }
    response = requests.post(inbox.hook, json.dumps(notice), timeout=10)
    assert "Content-Type" not in response.request.headers

    assert (response.status_code, response.text) == (200, "ok")
    [message] = inbox.messages()
    assert message["idempotency_key"] is None
    assert message["text"] == "Mage Notification\nFailed to run pipeline"  # from the blocks


def test_messages_are_listed_in_arrival_order_without_deduplication(inbox: Inbox) -> None:
    for n in (1, 2, 2):  # Slack keeps a double delivery, so the inbox shows it
        post_json(inbox.hook, {"text": f"message {n}"}, {"Idempotency-Key": f"ep-{n}:opened"})

    assert [m["text"] for m in inbox.messages()] == ["message 1", "message 2", "message 2"]
    status, body, _ = get(f"{inbox.url}/api/status")
    assert status == 200
    assert json.loads(body)["count"] == 3


def test_form_encoded_payload_field_is_accepted(inbox: Inbox) -> None:
    body = "payload=" + requests.utils.quote(json.dumps({"text": "from a form"}))
    status, _ = post(
        inbox.hook, body.encode(), {"Content-Type": "application/x-www-form-urlencoded"}
    )

    assert status == 200
    assert [m["text"] for m in inbox.messages()] == ["from a form"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"this is not json", "invalid_payload: the body is not JSON"),
        (b"[1, 2]", "invalid_payload: expected a JSON object, got list"),
        (b'{"username": "bot"}', "no_text:"),
        (b"\xff\xfe", "invalid_payload: the body is not UTF-8"),
    ],
)
def test_bad_body_is_refused_with_a_clear_400_and_not_stored(
    inbox: Inbox, body: bytes, expected: str
) -> None:
    status, text = post(inbox.hook, body, {"Content-Type": "application/json"})

    assert status == 400
    assert text.startswith(expected)
    assert inbox.messages() == []


def test_oversized_body_is_refused(inbox: Inbox) -> None:
    huge = json.dumps({"text": "x" * 1_100_000}).encode()
    status, text = post(inbox.hook, huge, {"Content-Type": "application/json"})

    assert status == 413
    assert "request_too_large" in text
    assert inbox.messages() == []


def test_a_client_still_sending_a_refused_body_reads_the_413(inbox: Inbox) -> None:
    """The 413 waits until the body has arrived: closing under a sender breaks its pipe, and
    it never reads the answer (seen on a loaded CI machine)."""
    body = b"x" * 1_100_000
    head = (
        f"POST /hook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", inbox.port), timeout=10) as client:
        client.sendall(head)
        time.sleep(0.3)  # the server has the headers and decides before the body comes
        client.sendall(body)
        answer = client.makefile("rb").read()
    assert answer.split(b"\r\n", 1)[0].endswith(b" 413 Request Entity Too Large")
    assert b"request_too_large" in answer


def test_wrong_method_and_path_explain_themselves(inbox: Inbox) -> None:
    status, text, _ = get(inbox.hook)
    assert (status, text) == (405, "POST a Slack message (JSON) to this URL\n")
    status, text = post_json(f"{inbox.url}/services/T0/B0/x", {"text": "hi"})
    assert (status, text) == (404, "POST Slack messages to /hook\n")


def test_plots_are_served_from_the_plots_dir(inbox: Inbox) -> None:
    png = make_png(inbox.plots_dir / "2024" / "machine2.png")

    status, body, headers = raw_request(inbox.port, "GET", "/plots/2024/machine2.png")

    assert status == 200
    assert body == png
    assert headers["Content-Type"] == "image/png"
    again, _, _ = raw_request(
        inbox.port,
        "GET",
        "/plots/2024/machine2.png",
        headers={"If-Modified-Since": headers["Last-Modified"]},
    )
    assert again == 304
    assert raw_request(inbox.port, "GET", "/plots/missing.png")[0] == 404


@pytest.mark.parametrize(
    "path",
    [
        "/plots/../inbox/messages.jsonl",
        "/plots/%2e%2e/inbox/messages.jsonl",
        "/plots/..%2finbox%2fmessages.jsonl",
        "/plots/2024/../../inbox/messages.jsonl",
        "/plots//etc/passwd",
        "/plots/%2fetc%2fpasswd",
        "/plots/escape/messages.jsonl",  # a symlink pointing out of the plots dir
    ],
)
def test_paths_leaving_the_plots_dir_are_refused(inbox: Inbox, path: str) -> None:
    post_json(inbox.hook, {"text": "secret"})
    inbox.plots_dir.mkdir(parents=True, exist_ok=True)
    (inbox.plots_dir / "escape").symlink_to(inbox.data_dir, target_is_directory=True)

    status, body, _ = raw_request(inbox.port, "GET", path)

    assert status == 403
    assert b"secret" not in body


def test_messages_survive_a_restart(inbox: Inbox) -> None:
    post_json(inbox.hook, {"text": "before restart"}, {"Idempotency-Key": "k1"})

    inbox.restart()
    post_json(inbox.hook, {"text": "after restart"})

    assert [(m["text"], m["idempotency_key"]) for m in inbox.messages()] == [
        ("before restart", "k1"),
        ("after restart", None),
    ]


def test_a_torn_last_line_loses_only_itself(inbox: Inbox) -> None:
    post_json(inbox.hook, {"text": "kept"})
    assert inbox.process is not None
    inbox.process.stop()
    with (inbox.data_dir / "messages.jsonl").open("a") as file:
        file.write('{"received_at": "2024-01-01T00:00:00+00:00", "payl')  # crash mid-write

    inbox.start()
    post_json(inbox.hook, {"text": "next"})

    assert [m["text"] for m in inbox.messages()] == ["kept", "next"]
    assert "line 2 is not a message" in inbox.process.log()
    inbox.restart()  # and the file stays readable afterwards
    assert [m["text"] for m in inbox.messages()] == ["kept", "next"]


def test_port_in_use_names_the_variable_to_change(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [PYTHON, "-m", "localflux", "inbox", "--port", str(port), "--data-dir", str(tmp_path)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )

    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "INBOX_PORT" in result.stderr


def test_port_and_plots_dir_default_to_the_settings(
    tmp_path: Path, port_factory, start_process
) -> None:
    port = port_factory()
    plots = tmp_path / "elsewhere"
    png = make_png(plots / "m.png")
    env = {"INBOX_PORT": str(port), "FLEETWATCH_OUTPUT_DIR": str(plots)}
    start_process(
        "inbox",
        [PYTHON, "-m", "localflux", "inbox", "--data-dir", str(tmp_path / "data")],
        url=f"http://127.0.0.1:{port}/api/status",
        env=env,
    )

    status, body, _ = raw_request(port, "GET", "/plots/m.png")
    assert (status, body) == (200, png)


def test_sigterm_stops_the_inbox_and_frees_the_port(inbox: Inbox) -> None:
    assert inbox.process is not None
    inbox.process.signal_group(15)

    assert wait_until(lambda: not inbox.process.alive(), timeout=10)
    assert inbox.process.popen.returncode == 0
    assert not http_ok(f"{inbox.url}/api/status")
