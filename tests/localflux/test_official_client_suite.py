"""The official client's own integration tests (influxdb3-python 0.21.0) against localflux.

Runs only when their source is in the cache dir (`INFLUXDB3_PYTHON_SRC`, default
`.cache/influxdb3-python-0.21.0`: a checkout of the repository at tag v0.21.0, whose
`tests/` holds `util/` and `data/`, which the PyPI sdist lacks); skipped otherwise. See
localflux/README.md ("The official client's integration tests") for the exclusions.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support import PYTHON, REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.localflux_only]

SOURCE = Path(
    os.environ.get("INFLUXDB3_PYTHON_SRC") or REPO_ROOT / ".cache" / "influxdb3-python-0.21.0"
)
SUITE = "tests/test_influxdb_client_3_integration.py"
# They need a server more than 20 ms away (a slow WAN); localflux on loopback answers sooner.
SLOW_WAN = ["test_write_timeout", "test_write_timeout_sync", "test_write_timeout_async",
            "test_write_timeout_batching"]  # fmt: skip


@pytest.mark.skipif(
    not (SOURCE / SUITE).exists() or not (SOURCE / "tests" / "util").is_dir(),
    reason=f"the influxdb3-python 0.21.0 source is not in {SOURCE}",
)
def test_the_official_client_suite_passes(localflux_factory):
    server = localflux_factory(token="suite-token")
    deselect = [f"--deselect={SUITE}::TestInfluxDBClient3Integration::{name}" for name in SLOW_WAN]
    try:
        import h2  # noqa: F401 - its gRPC compression test needs an HTTP/2 proxy
    except ImportError:
        deselect.append(
            f"--deselect={SUITE}::TestInfluxDBClient3Integration::test_disable_grpc_compression"
        )
    env = {
        **os.environ,
        "TESTING_INFLUXDB_URL": server.url,
        "TESTING_INFLUXDB_TOKEN": "suite-token",
        "TESTING_INFLUXDB_DATABASE": "machines",
    }
    result = subprocess.run(
        [PYTHON, "-m", "pytest", SUITE, "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         "-o", "addopts=", *deselect],
        cwd=SOURCE, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
