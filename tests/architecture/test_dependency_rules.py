"""The package structure, read from the code's own imports: dependencies point one way.

    localsystem ──> every package (the composition root of `make run`)
    influx-magic/ (Mage blocks) ──> influx_magic ──> fleetwatch ──> numpy, pandas
    detection_eval ──> fleetwatch, machine_simulator
    localflux.<stand-in>, machine_simulator: independent of everything else of ours
    everything ──> magic_common ──> nothing of ours

Every `import` and `from ... import` in a package's modules counts, including those inside
functions (a lazy import is still a dependency). A rule broken here is a design decision to
take on purpose: change the rule and the README's layout section together.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import PYTHON, REPO_ROOT

OURS = (
    "fleetwatch",
    "influx_magic",
    "detection_eval",
    "localflux",
    "localsystem",
    "machine_simulator",
    "magic_common",
    "benchmarks",
    "tests",
)

# What each package may import of ours (besides itself). localflux's stand-ins are checked one
# by one below: each may use only itself, localflux's top module and magic_common.
ALLOWED: dict[str, set[str]] = {
    "magic_common": set(),
    "fleetwatch": set(),
    "machine_simulator": {"magic_common"},
    "influx_magic": {"fleetwatch", "magic_common"},
    "detection_eval": {"fleetwatch", "machine_simulator", "magic_common"},
    "localsystem": set(OURS) - {"benchmarks", "tests"},
}
STAND_INS = ("influxdb", "telegraf", "inbox", "broker")

# The detection core's third-party dependencies: it must install and import without Mage,
# the InfluxDB client, River or anything else of the product's.
CORE_THIRD_PARTY = {"numpy", "pandas"}
PRODUCT_ONLY = (
    "mage_ai",
    "influxdb_client_3",
    "river",
    "matplotlib",
    "requests",
    "slugify",
    "paho",
    "amqtt",
    "datafusion",
    "pyarrow",
    "honcho",
)


def imports_of(path: Path) -> set[str]:
    """Absolute module names imported anywhere in a file of this checkout."""
    package = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts[:-1])
    return imports_in(path.read_text(encoding="utf-8"), package)


def imports_in(source: str, package: str) -> set[str]:
    """Absolute module names imported anywhere in `source`, a module of `package` (relative
    imports resolved against it)."""
    tree = ast.parse(source)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def modules(package: str) -> list[Path]:
    return sorted((REPO_ROOT / package).rglob("*.py"))


def ours(name: str) -> str | None:
    top = name.split(".")[0]
    return top if top in OURS else None


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_what_its_rule_allows(package: str) -> None:
    broken = []
    for path in modules(package):
        for name in sorted(imports_of(path)):
            top = ours(name)
            if top and top != package and top not in ALLOWED[package]:
                broken.append(f"{path.relative_to(REPO_ROOT)} imports {name}")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("stand_in", STAND_INS)
def test_each_stand_in_is_independent_of_the_others_and_of_the_product(stand_in: str) -> None:
    mine = f"localflux.{stand_in}"
    broken = []
    for path in modules(f"localflux/{stand_in}"):
        for name in sorted(imports_of(path)):
            top = ours(name)
            if (
                top is None
                or top == "magic_common"
                or name in ("localflux", "localflux.__version__")
            ):
                continue
            if not (name == mine or name.startswith(mine + ".")):
                broken.append(f"{path.relative_to(REPO_ROOT)} imports {name}")
    assert not broken, "\n".join(broken)


def test_the_stand_ins_top_module_only_dispatches_to_them() -> None:
    names = {n for p in (REPO_ROOT / "localflux").glob("*.py") for n in imports_of(p)}
    assert {n for n in names if ours(n) and ours(n) != "localflux"} == set()


def test_the_detection_core_needs_only_numpy_and_pandas() -> None:
    third_party = set()
    for path in modules("fleetwatch"):
        for name in imports_of(path):
            top = name.split(".")[0]
            if top and top not in sys.stdlib_module_names and top != "fleetwatch":
                third_party.add(top)
    assert third_party <= CORE_THIRD_PARTY, sorted(third_party - CORE_THIRD_PARTY)


def test_mage_blocks_call_the_product() -> None:
    broken = []
    for path in sorted((REPO_ROOT / "influx-magic").rglob("*.py")):
        for name in imports_of(path):
            top = ours(name)
            if top and top not in ("influx_magic", "fleetwatch"):
                broken.append(f"{path.relative_to(REPO_ROOT)} imports {name}")
    assert not broken, "\n".join(broken)


def test_the_rule_sees_imports_inside_functions() -> None:
    """The checker itself: a lazy import is found, and so is a relative one."""
    source = "def f():\n    from influx_magic import settings\nfrom . import hst\n"
    assert imports_in(source, "fleetwatch") >= {
        "influx_magic",
        "influx_magic.settings",
        "fleetwatch",
        "fleetwatch.hst",
    }


def test_the_detection_core_imports_with_the_product_s_dependencies_missing() -> None:
    """Installed alone (numpy and pandas), every module of the core imports and scores."""
    code = f"""
import importlib, pkgutil, sys
class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {PRODUCT_ONLY!r}:
            raise ImportError(f"{{name}} is not installed")
sys.meta_path.insert(0, Missing())
import fleetwatch
for info in pkgutil.walk_packages(fleetwatch.__path__, "fleetwatch."):
    importlib.import_module(info.name)
import pandas as pd
from fleetwatch.state import FleetState
frame = pd.DataFrame({{"unique_id": "m", "time": pd.date_range("2026-01-01", periods=5, freq="s"),
    "load": 1.0, "power": 2.0, "temperature": 3.0, "vibration": 4.0}})
scored, events = FleetState.new().process(frame)
print(len(scored))
"""
    done = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5"
