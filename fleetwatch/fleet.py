"""One Half-Space Trees model per machine, for a whole fleet at once.

Models built with the same parameters, limits and seed grow the same trees (the trees depend on
the seeded draws and the feature names only), so a fleet keeps one `TreeStructure` and the
masses of every machine in one array: a batch of points from many machines is routed in one
vectorized pass and each machine's windows advance independently. Every machine's scores are
still exactly those of its own `river.anomaly.HalfSpaceTrees`.

`engine="river"` keeps a real River model per machine instead: the reference the NumPy engine
is tested against, slower, same results.

>>> fleet = Fleet(["power"], n_trees=5, height=2, window_size=4, seed=1)
>>> X = np.array([[0.2], [0.3], [0.2], [0.3], [0.25], [0.9]] * 2)
>>> keys = ["m1"] * 6 + ["m2"] * 6
>>> scores = fleet.score_learn_many(keys, X)
>>> bool((scores[:6] == scores[6:]).all()), fleet.keys
(True, ['m1', 'm2'])
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Protocol

import numpy as np
import pandas as pd

from fleetwatch.hst import LANES, TreeStructure, WindowMasses, check_order

__all__ = ["ENGINES", "Fleet", "KeyIndex"]

ENGINES = ("numpy", "river")


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


class _Engine(Protocol):
    def add_models(self, count: int) -> None: ...
    def encode(self, X: np.ndarray, rows: np.ndarray) -> np.ndarray: ...
    def warm(self, rows: np.ndarray) -> np.ndarray: ...
    def window_fill(self, rows: np.ndarray) -> np.ndarray: ...
    def score(self, rows: np.ndarray, encoded: np.ndarray) -> np.ndarray: ...
    def learn(self, rows: np.ndarray, encoded: np.ndarray) -> None: ...
    def score_learn(self, rows: np.ndarray, encoded: np.ndarray, order: str) -> np.ndarray: ...


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


class _RiverEngine:
    """A `river.anomaly.HalfSpaceTrees` per machine, fed dicts row by row (the reference)."""

    def __init__(self, features: tuple[str, ...], params: dict) -> None:
        from river.anomaly import HalfSpaceTrees  # imported only when asked for: slow import

        self.features = features
        self.make = lambda: HalfSpaceTrees(**params)
        self.models: list = []

    def add_models(self, count: int) -> None:
        self.models.extend(self.make() for _ in range(count))

    def encode(self, X: np.ndarray, rows: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.features):
            raise ValueError(f"expected shape (n, {len(self.features)}), got {X.shape}")
        return X

    def warm(self, rows: np.ndarray) -> np.ndarray:
        return np.array([not self.models[r]._first_window for r in rows], dtype=bool)

    def window_fill(self, rows: np.ndarray) -> np.ndarray:
        return np.array([self.models[r].counter for r in rows], dtype=np.int64)

    def _dicts(self, encoded: np.ndarray) -> list[dict[str, float]]:
        return [dict(zip(self.features, row, strict=True)) for row in encoded.tolist()]

    def score(self, rows: np.ndarray, encoded: np.ndarray) -> np.ndarray:
        models = self.models
        points = self._dicts(encoded)
        return np.array([models[r].score_one(x) for r, x in zip(rows, points, strict=True)], float)

    def learn(self, rows: np.ndarray, encoded: np.ndarray) -> None:
        for r, x in zip(rows, self._dicts(encoded), strict=True):
            self.models[r].learn_one(x)

    def score_learn(self, rows: np.ndarray, encoded: np.ndarray, order: str) -> np.ndarray:
        scores = np.empty(len(rows))
        for i, (r, x) in enumerate(zip(rows, self._dicts(encoded), strict=True)):
            model = self.models[r]
            if order == "score_then_learn":
                scores[i] = model.score_one(x)
                model.learn_one(x)
            else:
                model.learn_one(x)
                scores[i] = model.score_one(x)
        return scores


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
        engine: str = "numpy",
    ) -> None:
        if not isinstance(seed, int):
            raise TypeError(f"a fleet shares its trees, so its seed must be an int, got {seed!r}")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        self.features = tuple(features)
        self.params = {
            "n_trees": int(n_trees),
            "height": int(height),
            "window_size": int(window_size),
            "limits": {k: (float(a), float(b)) for k, (a, b) in (limits or {}).items()},
            "seed": seed,
        }
        self.engine_name = engine
        # Growing checks the parameters for both engines (River would only fail later).
        structure = TreeStructure.grow(
            self.features, int(n_trees), int(height), self.params["limits"], seed
        )
        self.engine: _Engine = (
            _NumpyEngine(structure, int(window_size))
            if engine == "numpy"
            else _RiverEngine(self.features, self.params)
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
                "only the numpy engine's state can be saved; engine='river' is a reference"
            )
        return self.engine.masses

    @property
    def structure(self) -> TreeStructure:
        if not isinstance(self.engine, _NumpyEngine):
            raise TypeError("engine='river' keeps its trees inside River's models")
        return self.engine.structure
