"""River's own HalfSpaceTrees behind a `fleetwatch.fleet.Fleet`: the reference engine.

The detection core scores with its NumPy engine (`fleetwatch.hst`), which gives River 0.23's
scores exactly. This engine keeps a real `river.anomaly.HalfSpaceTrees` per machine and feeds
it dicts row by row, so the evaluation and the benchmarks can run the product's detector on
River itself (`FleetDetector(config, engine=RiverEngine)`) and compare.

>>> import numpy as np
>>> from fleetwatch.fleet import Fleet
>>> river = Fleet(["x"], n_trees=3, height=2, window_size=4, seed=1, engine=RiverEngine)
>>> ours = Fleet(["x"], n_trees=3, height=2, window_size=4, seed=1)
>>> X = np.array([[0.1], [0.2], [0.9], [0.15], [0.8], [0.2], [0.1], [0.95]])
>>> keys = ["m"] * len(X)
>>> bool(np.allclose(river.score_learn_many(keys, X), ours.score_learn_many(keys, X)))
True
"""

from __future__ import annotations

import numpy as np
from river.anomaly import HalfSpaceTrees

__all__ = ["RiverEngine"]


class RiverEngine:
    """A `river.anomaly.HalfSpaceTrees` per machine, fed dicts row by row (the reference)."""

    def __init__(self, features: tuple[str, ...], params: dict) -> None:
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
