"""One Half-Space Trees model per machine, for a whole fleet at once.

Models built with the same parameters, limits and seed grow the same trees (the trees depend on
the seeded draws and the feature names only), so a fleet keeps one `TreeStructure` and the
masses of every machine in one array: a batch of points from many machines is routed in one
vectorized pass and each machine's windows advance independently. Every machine's scores are
still exactly those of its own `river.anomaly.HalfSpaceTrees`.

`engine` may also be a factory of another `Engine` (`detection_eval.river_engine.RiverEngine`
keeps a real River model per machine: the reference the NumPy engine is tested against, slower,
same results).

>>> fleet = Fleet(["power"], n_trees=5, height=2, window_size=4, seed=1)
>>> X = np.array([[0.2], [0.3], [0.2], [0.3], [0.25], [0.9]] * 2)
>>> keys = ["m1"] * 6 + ["m2"] * 6
>>> scores = fleet.score_learn_many(keys, X)
>>> bool((scores[:6] == scores[6:]).all()), fleet.keys
(True, ['m1', 'm2'])
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Protocol

import numpy as np
import pandas as pd

from fleetwatch.hst import LANES, TreeStructure, WindowMasses, check_order

__all__ = ["ENGINES", "Engine", "EngineFactory", "Fleet", "KeyIndex"]

ENGINES = ("numpy",)


class KeyIndex:
    """Keys (compared as strings) to rows 0, 1, 2, ... in the order they were first seen.

    >>> index = KeyIndex()
    >>> index.rows(["b", "a", "b"]).tolist(), index.rows(["a", "c"]).tolist(), index.keys
    ([0, 1, 0], [1, 2], ['b', 'a', 'c'])
    """

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._index: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def rows(
        self, keys: Sequence[Hashable] | np.ndarray | pd.Series, add: bool = True
    ) -> np.ndarray:
        """The row of each key, adding unseen keys unless `add=False` (then `KeyError`)."""
        codes, uniques = pd.factorize(keys if isinstance(keys, pd.Series) else np.asarray(keys))
        if (codes < 0).any():
            raise ValueError("machine keys must not be missing (None/NaN)")
        index = self._index
        found = np.empty(len(uniques), dtype=np.intp)
        for i, key in enumerate(map(str, uniques)):
            row = index.get(key)
            if row is None:
                if not add:
                    raise KeyError(f"unknown machine {key!r}")
                row = index[key] = len(self.keys)
                self.keys.append(key)
            found[i] = row
        return found[codes]


class Engine(Protocol):
    """What a fleet needs of the models behind it (one per machine row)."""

    def add_models(self, count: int) -> None: ...
    def encode(self, X: np.ndarray, rows: np.ndarray) -> np.ndarray: ...
    def warm(self, rows: np.ndarray) -> np.ndarray: ...
    def window_fill(self, rows: np.ndarray) -> np.ndarray: ...
    def score(self, rows: np.ndarray, encoded: np.ndarray) -> np.ndarray: ...
    def learn(self, rows: np.ndarray, encoded: np.ndarray) -> None: ...
    def score_learn(self, rows: np.ndarray, encoded: np.ndarray, order: str) -> np.ndarray: ...


#: Builds an engine from the fleet's features and HST parameters (n_trees, height, window_size,
#: limits, seed).
EngineFactory = Callable[[tuple[str, ...], dict], Engine]


class _NumpyEngine:
    """Shared structure, masses in `WindowMasses`; points are encoded as their leaf codes."""

    def __init__(self, structure: TreeStructure, window_size: int) -> None:
        self.structure = structure
        self.masses = WindowMasses(structure, window_size)

    def add_models(self, count: int) -> None:
        self.masses.add_models(count)

    def encode(self, X: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return self.structure.route(X, rows)

    def warm(self, rows: np.ndarray) -> np.ndarray:
        return self.masses.warm[rows]

    def window_fill(self, rows: np.ndarray) -> np.ndarray:
        return self.masses.counter[rows]

    def score(self, rows: np.ndarray, encoded: np.ndarray) -> np.ndarray:
        return self.masses.score(rows, encoded)

    def learn(self, rows: np.ndarray, encoded: np.ndarray) -> None:
        self.masses.learn(rows, encoded)

    def score_learn(self, rows: np.ndarray, encoded: np.ndarray, order: str) -> np.ndarray:
        return self.masses.score_learn(rows, encoded, order)


class Fleet:
    """HST models for many machines (keys), with one set of parameters and one seed.

    The low-level calls take model rows (`rows(keys)`) and encoded points (`encode(X)`), so a
    caller that scores and learns the same points in several steps routes them once.
    """

    def __init__(
        self,
        features: Sequence[str],
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        limits: Mapping[str, tuple[float, float]] | None = None,
        seed: int = 1,
        engine: str | EngineFactory = "numpy",
    ) -> None:
        if not isinstance(seed, int):
            raise TypeError(f"a fleet shares its trees, so its seed must be an int, got {seed!r}")
        if isinstance(engine, str) and engine not in ENGINES:
            raise ValueError(
                f"engine must be one of {ENGINES} or an engine factory, got {engine!r}"
            )
        self.features = tuple(features)
        self.params = {
            "n_trees": int(n_trees),
            "height": int(height),
            "window_size": int(window_size),
            "limits": {k: (float(a), float(b)) for k, (a, b) in (limits or {}).items()},
            "seed": seed,
        }
        self.engine_name = (
            engine if isinstance(engine, str) else getattr(engine, "__name__", "custom")
        )
        # Growing checks the parameters for both engines (River would only fail later).
        structure = TreeStructure.grow(
            self.features, int(n_trees), int(height), self.params["limits"], seed
        )
        self.engine: Engine = (
            _NumpyEngine(structure, int(window_size))
            if engine == "numpy"
            else engine(self.features, self.params)
        )
        self.index = KeyIndex()

    def __len__(self) -> int:
        return len(self.index)

    def rows(
        self, keys: Sequence[Hashable] | np.ndarray | pd.Series, add: bool = True
    ) -> np.ndarray:
        """Model row of each key (keys compare as strings), adding models for unseen keys
        unless `add=False`, which raises `KeyError` instead."""
        before = len(self.index)
        rows = self.index.rows(keys, add)
        if len(self.index) > before:
            self.engine.add_models(len(self.index) - before)
        return rows

    @property
    def keys(self) -> list[str]:
        return self.index.keys

    def encode(self, X: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Points of the models at `rows` in the engine's form: their cells (NumPy) or the
        float rows (River)."""
        return self.engine.encode(X, rows)

    def warm(self, rows: np.ndarray) -> np.ndarray:
        """Whether each model has completed its first window (before it, scores are 0)."""
        return self.engine.warm(rows)

    def window_fill(self, rows: np.ndarray) -> np.ndarray:
        """Points each model has learned in its current window (it pivots at window_size)."""
        return self.engine.window_fill(rows)

    def score(self, rows: np.ndarray, encoded: np.ndarray) -> np.ndarray:
        """Scores against each model's current reference window, learning nothing."""
        return self.engine.score(rows, encoded)

    def learn(self, rows: np.ndarray, encoded: np.ndarray) -> None:
        """Learn the points in order; each model pivots when its window fills."""
        self.engine.learn(rows, encoded)

    def score_learn(self, rows: np.ndarray, encoded: np.ndarray, order: str) -> np.ndarray:
        """Score and learn every point in order (per machine, as its own River model would)."""
        return self.engine.score_learn(rows, encoded, check_order(order))

    def score_learn_many(
        self, keys: Sequence[Hashable] | np.ndarray, X: np.ndarray, order: str = "score_then_learn"
    ) -> np.ndarray:
        """Score and learn a batch of points from many machines; rows are in stream order."""
        check_order(order)
        rows = self.rows(keys)
        X = np.asarray(X, dtype=np.float64)
        if len(rows) != len(X):
            raise ValueError(f"{len(rows)} keys for {len(X)} points")
        step = max(1, LANES * 4 // self.params["n_trees"])
        parts = [
            self.score_learn(
                rows[i : i + step], self.encode(X[i : i + step], rows[i : i + step]), order
            )
            for i in range(0, len(X), step)
        ]
        return np.concatenate(parts) if parts else np.empty(0)

    def masses(self) -> WindowMasses:
        """The NumPy engine's masses (to persist them); River models are not persistable."""
        if not isinstance(self.engine, _NumpyEngine):
            raise TypeError(
                "only the numpy engine's state can be saved; another engine is a reference"
            )
        return self.engine.masses

    @property
    def structure(self) -> TreeStructure:
        if not isinstance(self.engine, _NumpyEngine):
            raise TypeError(f"engine {self.engine_name!r} keeps its trees inside its own models")
        return self.engine.structure
