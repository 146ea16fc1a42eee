"""Half-Space Trees in NumPy, score for score identical to `river.anomaly.HalfSpaceTrees` 0.23.

River walks one point at a time through Python objects. Three facts make a vectorized version
exact rather than approximate:

* The trees come from `random.Random(seed)` alone: two draws per split node, in pre-order
  (`rng.choices` for the feature, `rng.uniform` for the threshold). `TreeStructure.grow`
  replays those draws with River's float arithmetic, level by level.
* With every feature present, a point's path is fixed by the thresholds, so a window's node
  masses follow from how many points reached each *leaf*; an inner node's mass is the sum of
  its leaves. Learning is a leaf count (`np.add.at`), not a walk.
* `score_one` reads only `r_mass`, which changes only at a window pivot. Between two pivots
  every score is a lookup in a per-leaf table built at the pivot; the masses are integers and
  the score adds integers below 2**53, so the sum is exact in any order and `1 - S / max` is
  the same float River computes.

A batch is cut where the pivots fall; all of its points are routed at once, and the tables of
all its windows are built in one vectorized pass. `WindowMasses` holds the masses of many
models that share one `TreeStructure` (a fleet); `HalfSpaceTrees` is the one-model API.

Missing features: River sends a point that lacks a split feature down the child with more
`l_mass`, which depends on the learning order; arrays have no missing keys, so that path does
not exist here. NaN follows River's comparison (`nan < t` is false: right child), identically.

>>> X = np.array([0.5, 0.45, 0.43, 0.44, 0.445, 0.45, 0.0])[:, None]
>>> hst = HalfSpaceTrees(n_trees=5, height=3, window_size=3, seed=42)
>>> hst.learn_many(X[:3])  # warming up, as in River's docstring
>>> scores = hst.score_learn_many(X, order="learn_then_score")
>>> [f"{s:.3f}" for s in scores]
['0.107', '0.071', '0.107', '0.107', '0.107', '0.071', '0.853']
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

__all__ = ["ORDERS", "HalfSpaceTrees", "TreeStructure", "WindowMasses"]

#: `score_then_learn` is test-then-train (the default); `learn_then_score` scores each point
#: after learning it (kept for comparisons).
ORDERS = ("score_then_learn", "learn_then_score")
PADDING = 0.15  # River's make_padded_tree padding
LANES = 1 << 16  # (point, tree) pairs routed per chunk: large enough to amortize, fits in cache
GRID_CELLS = 1 << 16  # largest threshold grid routed by lookup (see TreeStructure._grid)
TABLE_BUDGET = 1 << 22  # leaf-table cells built per step (x4-8 bytes), bounds a batch's memory


def check_order(order: str) -> str:
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    return order


@dataclass(frozen=True, eq=False)
class TreeStructure:
    """The split features and thresholds of a forest, in heap order (children of i: 2i+1, 2i+2).

    `features` are the column names in the order of the arrays' columns; `split_column[t, i]`
    is the column a split node tests, `split_threshold[t, i]` its threshold.
    """

    features: tuple[str, ...]
    height: int
    split_column: np.ndarray  # (n_trees, 2**height - 1) intp
    split_threshold: np.ndarray  # (n_trees, 2**height - 1) float64

    @property
    def n_trees(self) -> int:
        return self.split_column.shape[0]

    @property
    def n_leaves(self) -> int:
        return 1 << self.height

    @classmethod
    def grow(
        cls,
        features: Sequence[str],
        n_trees: int,
        height: int,
        limits: Mapping[str, tuple[float, float]] | None = None,
        seed: int | None = None,
    ) -> TreeStructure:
        """Build the trees River builds on its first `learn_one`, from the same draws.

        River grows each tree recursively over `sorted(x)` with the limits (default (0, 1)),
        drawing `choices(features, weights=spans)` then `uniform(a + p*(b-a), b - p*(b-a))` at
        each split, left subtree before right. Here every node's two draws are looked up by
        its pre-order rank and the splits of a level are computed together.
        """
        features = tuple(features)
        if not features or len(set(features)) != len(features):
            raise ValueError(f"features must be distinct names, got {features!r}")
        if n_trees < 1 or height < 1:
            raise ValueError(f"n_trees and height must be >= 1, got {n_trees}, {height}")
        names = sorted(features)  # River: `for i in sorted(x)`
        limits = dict(limits or {})
        lo = np.array([float(limits.get(n, (0.0, 1.0))[0]) for n in names])
        hi = np.array([float(limits.get(n, (0.0, 1.0))[1]) for n in names])
        if not (np.isfinite(lo).all() and np.isfinite(hi).all() and (hi > lo).all()):
            bad = {n: limits.get(n) for n, a, b in zip(names, lo, hi, strict=True) if not a < b}
            raise ValueError(f"limits must be finite with low < high, got {bad or limits}")

        n_split = (1 << height) - 1
        rng = random.Random(seed)
        draws = np.array([rng.random() for _ in range(2 * n_split * n_trees)])
        draws = draws.reshape(n_trees, n_split, 2)[:, _preorder_rank(height)]

        column = np.empty((n_trees, n_split), dtype=np.intp)
        threshold = np.empty((n_trees, n_split))
        lows = np.broadcast_to(lo, (n_trees, 1, len(names))).copy()
        highs = np.broadcast_to(hi, (n_trees, 1, len(names))).copy()
        to_column = np.array([features.index(n) for n in names], dtype=np.intp)
        for depth in range(height):
            level = slice((1 << depth) - 1, (1 << (depth + 1)) - 1)
            cum = np.cumsum(highs - lows, axis=-1)  # accumulate(weights), sequential like River
            total = cum[..., -1] + 0.0
            pick = draws[:, level, 0] * total
            # bisect(cum_weights, random() * total, 0, n - 1)
            chosen = (cum[..., :-1] <= pick[..., None]).sum(axis=-1)
            a = np.take_along_axis(lows, chosen[..., None], axis=-1)[..., 0]
            b = np.take_along_axis(highs, chosen[..., None], axis=-1)[..., 0]
            start = a + PADDING * (b - a)
            stop = b - PADDING * (b - a)
            at = start + (stop - start) * draws[:, level, 1]  # random.uniform
            column[:, level] = to_column[chosen]
            threshold[:, level] = at
            if depth + 1 < height:
                lows = np.repeat(lows, 2, axis=1)
                highs = np.repeat(highs, 2, axis=1)
                np.put_along_axis(highs[:, 0::2], chosen[..., None], at[..., None], axis=-1)
                np.put_along_axis(lows[:, 1::2], chosen[..., None], at[..., None], axis=-1)
        return cls(features, height, column, threshold)

    @property
    def cells(self) -> int:
        """Leaf cells of one model: `n_trees * n_leaves`."""
        return self.n_trees << self.height

    def route(self, X: np.ndarray, models: np.ndarray | None = None) -> np.ndarray:
        """Cell codes `model * cells + tree * n_leaves + leaf` of every point in every tree.

        `x < threshold` goes left as in River, so NaN goes right. With `models` (each point's
        model row) the code addresses that model's cell in a fleet's arrays, so counting and
        scoring need no more index arithmetic.
        """
        X = self.check_array(X)
        n, n_trees = X.shape[0], self.n_trees
        out = np.empty((n, n_trees), dtype=np.intp)
        chunk = max(1, LANES // n_trees)
        grid = self._grid
        for start in range(0, n, chunk):
            stop = start + chunk
            codes = out[start:stop]
            if grid is None:
                codes[...] = self._route_levels(X[start:stop])
            else:
                cuts, strides, table = grid
                np.take(table, _grid_cells(X[start:stop], cuts, strides), axis=0, out=codes)
            if models is not None:
                codes += (models[start:stop] * self.cells)[:, None]
        return out

    @cached_property
    def _grid(self) -> tuple[list[np.ndarray], np.ndarray, np.ndarray] | None:
        """For small forests: every feature's distinct thresholds cut space into a grid whose
        cells each lie in one leaf of every tree; then routing is counting the thresholds
        below each value (cheap comparisons) and looking the cell's leaves up. Used when the
        grid is small and the counting cheaper than walking the levels."""
        cuts = [
            np.unique(self.split_threshold[self.split_column == f])
            for f in range(len(self.features))
        ]
        sizes = [len(c) + 1 for c in cuts]
        if math.prod(sizes) > GRID_CELLS or sum(sizes) > 8 * self.n_trees * self.height:
            return None
        strides = np.array([math.prod(sizes[f + 1 :]) for f in range(len(sizes))], dtype=np.intp)
        # One corner per cell: -inf, then each threshold (a value at a threshold goes right).
        corners = np.meshgrid(*[np.r_[-np.inf, c] for c in cuts], indexing="ij")
        table = self._route_levels(np.stack([c.ravel() for c in corners], axis=1))
        return cuts, strides, table

    def _route_levels(self, x: np.ndarray) -> np.ndarray:
        """Walk all (point, tree) pairs down one level at a time: gather the split column and
        threshold, compare, step to the child."""
        n, d = x.shape
        n_split = (1 << self.height) - 1
        tree = np.arange(self.n_trees, dtype=np.intp)
        columns = self.split_column.reshape(-1)
        thresholds = self.split_threshold.reshape(-1)
        # Root level: one split per tree, so compare whole columns (no per-pair gather).
        root = x if d == 1 else x.take(self.split_column[:, 0], axis=1)
        # Global node index; the child of global g is 2g + step - (x < threshold).
        node = (tree * n_split + 2) - (root < self.split_threshold[:, 0])
        step = 2 - tree * n_split
        flat = x.reshape(-1)
        row = (np.arange(n, dtype=np.intp) * d)[:, None]
        for _ in range(1, self.height):
            if d == 1:
                left = x < thresholds.take(node)
            else:
                col = columns.take(node)
                col += row
                left = flat.take(col) < thresholds.take(node)
            node *= 2
            node += step
            node -= left
        node += tree - n_split  # == tree * n_leaves + leaf
        return node

    def check_array(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.features):
            raise ValueError(
                f"expected an array of shape (n, {len(self.features)}) for features "
                f"{list(self.features)}, got shape {X.shape}"
            )
        return X


class WindowMasses:
    """The window masses of many HST models sharing one structure, as leaf counts and tables.

    Per model: `counter` (points learned in the current window), `warm` (a window has been
    completed; River's `not _first_window`), `counts` (leaves reached in the current window:
    River's `l_mass` at the leaves) and `table` (each leaf's score sum along its path with the
    reference window's masses: River's `r_mass`, pre-added).
    """

    def __init__(self, structure: TreeStructure, window_size: int, n_models: int = 0) -> None:
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        self.structure = structure
        self.window_size = int(window_size)
        height, n_trees = structure.height, structure.n_trees
        # River stops descending below a node with r_mass < 0.1 * window_size; masses are
        # integers, so that is r_mass < ceil(0.1 * window_size).
        self.size_limit = math.ceil(0.1 * self.window_size)
        self.max_score = n_trees * self.window_size * ((1 << (height + 1)) - 1)
        self.count_dtype = np.dtype(np.uint16 if self.window_size < (1 << 16) else np.uint32)
        largest = self.window_size * ((1 << (height + 1)) - 1)
        self.table_dtype = np.dtype(np.int32 if largest < (1 << 31) else np.int64)
        cells = (n_trees, structure.n_leaves)
        self.counter = np.zeros(n_models, dtype=np.int64)
        self.warm = np.zeros(n_models, dtype=bool)
        self.counts = np.zeros((n_models, *cells), dtype=self.count_dtype)
        self.table = np.zeros((n_models, *cells), dtype=self.table_dtype)

    @property
    def n_models(self) -> int:
        return len(self.counter)

    def add_models(self, count: int) -> np.ndarray:
        """Append `count` fresh models (River's state before the first point); their rows."""
        first = self.n_models
        cells = self.counts.shape[1:]
        self.counter = np.concatenate([self.counter, np.zeros(count, np.int64)])
        self.warm = np.concatenate([self.warm, np.zeros(count, bool)])
        self.counts = np.concatenate([self.counts, np.zeros((count, *cells), self.count_dtype)])
        self.table = np.concatenate([self.table, np.zeros((count, *cells), self.table_dtype)])
        return np.arange(first, first + count)

    def score(self, models: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """River's `score_one` of each point against its model's current reference window.

        `codes` are the points' cell codes for their models (`TreeStructure.route(X, models)`).
        """
        total = _tree_sum(self.table.reshape(-1).take(codes))
        return np.where(self.warm[models], 1.0 - total / self.max_score, 0.0)

    def learn(self, models: np.ndarray, codes: np.ndarray) -> None:
        """River's `learn_one` for each point in order (pivoting windows where they fill)."""
        self._advance(np.asarray(models, dtype=np.intp), codes, None)

    def score_learn(self, models: np.ndarray, codes: np.ndarray, order: str) -> np.ndarray:
        """Score and learn each point in order, as River's `score_one`/`learn_one` pairs."""
        scores = self._advance(np.asarray(models, dtype=np.intp), codes, check_order(order))
        assert scores is not None
        return scores

    def _advance(self, models: np.ndarray, codes: np.ndarray, order: str | None):
        """Learn (and score) a batch. Models whose window does not fill ("calm") only count
        leaves and read their current table; the others go through `_advance_pivoting`."""
        scores = None if order is None else np.empty(len(models))
        if len(models) == 0:
            return scores
        arrivals = np.bincount(models, minlength=self.n_models)
        pivoting = self.counter + arrivals >= self.window_size
        busy = pivoting[models] if pivoting.any() else None
        calm = None if busy is None else ~busy
        if busy is None or calm.any():
            calm_codes = codes if calm is None else codes[calm]
            if scores is not None:
                calm_models = models if calm is None else models[calm]
                scores[slice(None) if calm is None else calm] = self.score(calm_models, calm_codes)
            np.add.at(self.counts.reshape(-1), calm_codes, self.count_dtype.type(1))
            self.counter[~pivoting] += arrivals[~pivoting]
        if busy is not None:
            everything = calm is not None and not calm.any()
            sub = slice(None) if everything else busy
            result = self._advance_pivoting(models[sub], codes[sub], order)
            if scores is not None:
                scores[sub] = result
        return scores

    def _advance_pivoting(self, models: np.ndarray, codes: np.ndarray, order: str | None):
        """Learn (and score) a batch in which every model completes at least one window.

        Each model's windows completed here become "blocks" of leaf counts; their tables are
        built together, and each point is scored with the table of the windows completed
        before it.
        """
        n, w, cells = len(models), self.window_size, self.structure.cells
        if (models[0] == models).all():
            perm = None
            firsts, sizes, sorted_models = models[:1], np.array([n]), models
        else:
            perm = np.argsort(models, kind="stable")
            sorted_models = models[perm]
            starts = np.flatnonzero(np.r_[True, sorted_models[1:] != sorted_models[:-1]])
            firsts, sizes = sorted_models[starts], np.diff(np.r_[starts, n])
        counter = self.counter[firsts]
        pivots = (counter + sizes) // w
        if int(pivots.sum()) * cells > TABLE_BUDGET and n > 1:
            half = n // 2  # too many tables at once: two consecutive halves, same result
            first = self._advance(models[:half], codes[:half], order)
            second = self._advance(models[half:], codes[half:], order)
            return None if order is None else np.concatenate([first, second])

        # In model order: each point's position in its model's window sequence, its window
        # (pos // w) and, for completed windows, its block; then back to arrival order.
        group = np.repeat(np.arange(len(firsts)), sizes)
        pos = np.arange(n) - np.repeat(np.cumsum(sizes) - sizes, sizes) + counter[group]
        window = pos // w
        first_block = np.cumsum(pivots) - pivots
        complete = window < pivots[group]
        count_shift = (first_block[group] + window - sorted_models) * cells
        if order is not None:
            # Pivots before a point's score: those of earlier points (score_then_learn), or
            # also its own (learn_then_score). None: the model's current table.
            seen = window if order == ORDERS[0] else (pos + 1) // w
            fresh = seen > 0
            score_shift = (first_block[group] + seen - 1 - sorted_models) * cells
        if perm is not None:
            complete, count_shift = _unsort(perm, complete), _unsort(perm, count_shift)
            if order is not None:
                fresh, score_shift = _unsort(perm, fresh), _unsort(perm, score_shift)

        blocks = np.zeros((int(pivots.sum()), cells), dtype=self.count_dtype)
        blocks[first_block] = self.counts[firsts].reshape(len(firsts), cells)
        self.counts[firsts] = 0
        one = self.count_dtype.type(1)
        np.add.at(blocks.reshape(-1), codes[complete] + count_shift[complete][:, None], one)
        tail = ~complete
        np.add.at(self.counts.reshape(-1), codes[tail], one)
        tables = self._tables(blocks.reshape(-1, *self.counts.shape[1:]))

        scores = None
        if order is not None:
            total = np.empty(n, dtype=np.int64)
            old = ~fresh
            total[old] = _tree_sum(self.table.reshape(-1).take(codes[old]))
            moved = codes[fresh] + score_shift[fresh][:, None]
            total[fresh] = _tree_sum(tables.reshape(-1).take(moved))
            warm = self.warm[models] | fresh
            scores = np.where(warm, 1.0 - total / self.max_score, 0.0)

        self.table[firsts] = tables[first_block + pivots - 1]
        self.warm[firsts] = True
        self.counter[firsts] = (counter + sizes) % w
        return scores

    def _tables(self, blocks: np.ndarray) -> np.ndarray:
        """Per-leaf score sums for windows whose leaf counts are `blocks` (B, trees, leaves).

        River adds `r_mass * 2**depth` down the path and stops after the first node below the
        size limit. Masses shrink down a path, so a node counts iff its parent reaches the
        limit; the sum is built top-down over all nodes of a level at once.
        """
        height = self.structure.height
        levels = [blocks]
        for _ in range(height):
            below = levels[-1]
            levels.append(below[..., 0::2] + below[..., 1::2])
        levels.reverse()  # levels[d]: masses of the 2**d nodes at depth d
        total = levels[0].astype(self.table_dtype)
        for depth in range(1, height + 1):
            counts = levels[depth - 1] >= self.size_limit
            if not counts.any():  # nothing deeper is ever reached
                return np.repeat(total, 1 << (height - depth + 1), axis=-1)
            part = levels[depth].astype(self.table_dtype).reshape(*total.shape, 2)
            part *= (counts.astype(self.table_dtype) << depth)[..., None]
            part += total[..., None]
            total = part.reshape(*total.shape[:-1], -1)
        return total

    def state(self) -> dict[str, np.ndarray]:
        """The arrays that are the models' state (to persist them)."""
        return {
            "counter": self.counter,
            "warm": self.warm,
            "counts": self.counts,
            "table": self.table,
        }

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Take the arrays of `state()` back, checking their shapes and types."""
        cells = self.counts.shape[1:]
        expected = {
            "counter": ((-1,), np.dtype(np.int64)),
            "warm": ((-1,), np.dtype(bool)),
            "counts": ((-1, *cells), self.count_dtype),
            "table": ((-1, *cells), self.table_dtype),
        }
        sizes = set()
        for name, (shape, dtype) in expected.items():
            array = arrays[name]
            if array.dtype != dtype or array.shape[1:] != shape[1:]:
                raise ValueError(
                    f"{name}: expected {dtype} {shape}, got {array.dtype} {array.shape}"
                )
            sizes.add(len(array))
        if len(sizes) != 1:
            raise ValueError(f"model arrays disagree on the number of models: {sorted(sizes)}")
        if (arrays["counter"] < 0).any() or (arrays["counter"] >= self.window_size).any():
            raise ValueError("counter out of range for the window size")
        self.counter, self.warm = arrays["counter"].copy(), arrays["warm"].copy()
        self.counts, self.table = arrays["counts"].copy(), arrays["table"].copy()


def _grid_cells(x: np.ndarray, cuts: list[np.ndarray], strides: np.ndarray) -> np.ndarray:
    """Each point's grid cell: per feature, the number of thresholds at or below the value
    (NaN: all of them, as NaN goes right)."""
    cell = np.full(len(x), sum(len(c) * s for c, s in zip(cuts, strides, strict=True)), np.intp)
    for f, (thresholds, stride) in enumerate(zip(cuts, strides, strict=True)):
        above = np.zeros(len(x), dtype=np.uint16)  # thresholds above the value
        column = x[:, f]
        for threshold in thresholds:
            np.add(above, column < threshold, out=above)
        cell -= np.multiply(above, stride, dtype=np.intp)
    return cell


def _tree_sum(values: np.ndarray) -> np.ndarray:
    """Row sums of (points, trees) table values as int64 (a column loop beats `sum(axis=1)`
    on a short axis)."""
    total = values[:, 0].astype(np.int64)
    for tree in range(1, values.shape[1]):
        total += values[:, tree]
    return total


def _unsort(perm: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Values computed in `perm` order, put back in arrival order."""
    out = np.empty_like(values)
    out[perm] = values
    return out


def _preorder_rank(height: int) -> np.ndarray:
    """Pre-order rank of each split node in heap order: the order River draws them in."""
    rank = np.zeros((1 << height) - 1, dtype=np.intp)
    for depth in range(height - 1):
        level = np.arange((1 << depth) - 1, (1 << (depth + 1)) - 1)
        rank[2 * level + 1] = rank[level] + 1
        rank[2 * level + 2] = rank[level] + (1 << (height - depth - 1))
    return rank


class HalfSpaceTrees:
    """One Half-Space Trees model on arrays; River 0.23's scores for the same stream and seed.

    Columns of `X` are the features named by `features` (default `f0, f1, ...`); River sees
    them as dict keys, and trees are grown over the sorted names as River does. `limits` maps
    names to (low, high); unnamed features span (0, 1), River's default.
    """

    def __init__(
        self,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        limits: Mapping[str, tuple[float, float]] | None = None,
        seed: int | None = None,
        features: Sequence[str] | None = None,
    ) -> None:
        self.n_trees, self.height, self.window_size = n_trees, height, window_size
        self.limits, self.seed = dict(limits or {}), seed
        self.features = tuple(features) if features is not None else None
        self._masses: WindowMasses | None = None

    def _masses_for(self, X: np.ndarray) -> tuple[WindowMasses, np.ndarray]:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (points x features), got shape {X.shape}")
        if self._masses is None:
            features = self.features or tuple(f"f{i}" for i in range(X.shape[1]))
            structure = TreeStructure.grow(
                features, self.n_trees, self.height, self.limits, self.seed
            )
            self.features = features
            self._masses = WindowMasses(structure, self.window_size, n_models=1)
        return self._masses, self._masses.structure.check_array(X)

    def _chunks(self, X: np.ndarray):
        """Route rows a chunk at a time: the codes of a huge batch never exist all at once."""
        masses, X = self._masses_for(X)
        step = max(1, LANES // masses.structure.n_trees)
        for start in range(0, len(X), step):
            rows = np.zeros(len(X[start : start + step]), np.intp)
            yield masses, rows, masses.structure.route(X[start : start + step], rows)

    def score_many(self, X: np.ndarray) -> np.ndarray:
        """Scores without learning (River's `score_one` for each row)."""
        parts = [masses.score(rows, codes) for masses, rows, codes in self._chunks(X)]
        return np.concatenate(parts) if parts else np.empty(0)

    def learn_many(self, X: np.ndarray) -> None:
        """Learn the rows in order (River's `learn_one` for each row)."""
        for masses, rows, codes in self._chunks(X):
            masses.learn(rows, codes)

    def score_learn_many(self, X: np.ndarray, order: str = "score_then_learn") -> np.ndarray:
        """Score and learn each row in turn; `order` says which comes first for a row."""
        check_order(order)
        parts = [masses.score_learn(rows, codes, order) for masses, rows, codes in self._chunks(X)]
        return np.concatenate(parts) if parts else np.empty(0)
