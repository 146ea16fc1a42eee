"""The `inbox` fixture: a real inbox process in temporary dirs, stopped after the test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.inbox.helpers import Inbox


@pytest.fixture
def inbox(tmp_path: Path, port_factory: Callable[[], int], start_process: Callable) -> Inbox:
    box = Inbox(
        port=port_factory(),
        data_dir=tmp_path / "inbox",
        plots_dir=tmp_path / "plots",
        launch=start_process,
    )
    box.start()
    return box
