"""Shared helpers for the evaluation tests: where NAB's published reference files are, when there.

The scorer's reproduction checks need NAB v1.1's own result files with their per-row `S(t)`
columns and published per-file tables for the realKnownCause series (`../shared/nab`). They
are the only tests that read `../shared/`, and they skip when it is absent; `$NAB_DIR` is used
instead when it points at such a folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from detection_eval.settings import SETTINGS
from tests.support import REPO_ROOT

REFERENCE_WINDOWS = "combined_windows_realKnownCause.json"


def reference_dirs() -> list[Path]:
    return [SETTINGS.path("NAB_DIR"), REPO_ROOT.parent / "shared" / "nab"]


@pytest.fixture(scope="session")
def shared_nab() -> Path:
    """NAB's reference result files for realKnownCause; skips the test when absent."""
    for directory in reference_dirs():
        if (directory / REFERENCE_WINDOWS).is_file() and (directory / "results" / "null").is_dir():
            return directory
    pytest.skip(f"NAB reference results not found in {[str(d) for d in reference_dirs()]}")
