"""The pipeline's block files, loaded by path and called the way Mage calls them.

Mage loads each block file of `influx-magic/` by path and calls its decorated function with the
upstream block's output and the run's variables as keyword arguments (outside Mage the
decorators are imported from Mage and return the function unchanged). `load_block` does the
same, so tests and benchmarks run exactly the code Mage runs; `run_pipeline` calls the five
blocks in order in this process, as `mage run` does with `run_pipeline_in_one_process`.
The project's folders are never put on `sys.path`: `transformers/` would shadow the HuggingFace
package of that name.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

import pandas as pd

from influx_magic.run_context import PIPELINE
from magic_common.envsettings import project_root

PROJECT = project_root() / "influx-magic"
BLOCKS = {
    "load_influx_data": "data_loaders/load_influx_data.py",
    "transform_data": "transformers/transform_data.py",
    "detect_anomalies": "transformers/detect_anomalies.py",
    "check_anomalies": "custom/check_anomalies.py",
    "export_anomaly_scores": "data_exporters/export_anomaly_scores.py",
}


def load_module(name: str) -> ModuleType:
    """Block `name`'s file as a module (its block function, its `@test` functions)."""
    path = PROJECT / BLOCKS[name]
    spec = importlib.util.spec_from_file_location(f"influx_magic_block_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load block {name} from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_block(name: str) -> Callable[..., Any]:
    """The decorated function of block `name`, from its file."""
    return getattr(load_module(name), name)


def run_pipeline(
    variables: Mapping[str, Any] | None = None,
    *,
    handoff: Callable[[pd.DataFrame], pd.DataFrame] = lambda frame: frame,
    step: Callable[[str, Callable[[], Any]], Any] = lambda name, call: call(),
) -> dict[str, Any]:
    """The five blocks in order; the exporter's summary.

    `variables` are the run's keyword arguments (runtime variables, Mage's run id);
    `handoff` is what happens to a frame between blocks (Mage: a Parquet round trip);
    `step(name, call)` runs each block (to time it, say).
    """
    kwargs = {"pipeline_uuid": PIPELINE, "context": {}, **(variables or {})}
    output: Any = None
    for name in BLOCKS:
        block = load_block(name)
        args = () if output is None else (handoff(output),)
        output = step(name, lambda block=block, args=args: block(*args, **kwargs))
    return output
