"""Shared helpers for the evaluation tests: where NAB's labelled subset is, when it is there."""

from __future__ import annotations

from pathlib import Path

import pytest

from detection_eval.settings import SETTINGS


def nab_dir() -> Path:
    return SETTINGS.path("NAB_DIR")


@pytest.fixture(scope="session")
def shared_nab() -> Path:
    """The NAB subset (`$NAB_DIR` or `../shared/nab`); skips the test when it is absent."""
    directory = nab_dir()
    if not (directory / "results").is_dir() or not (directory / "data").is_dir():
        pytest.skip(f"NAB subset not found at {directory} (set NAB_DIR)")
    return directory
