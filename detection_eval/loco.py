"""Leave one category out: does a setting chosen without a category hold on it?

Given a few candidate configurations, each run on every series with every seed, for each NAB
category in turn:

1. the other categories are the training corpus: each candidate's NAB threshold is swept there
   and its normalised score taken there (mean over seeds);
2. the candidate with the best training mean is chosen;
3. its score on the held-out category is taken at the threshold it got from the training
   categories (so nothing about the held-out category is used), normalised over that category
   alone; mean over seeds. A category without labelled windows (`artificialNoAnomaly`) has no
   normalised score: its detections are reported instead;
4. beside it, the candidate that would have been best on the held-out category itself (the
   oracle), at the same training thresholds: the gap between the two is what choosing
   without the category cost.

>>> pick({"a": 40.0, "b": 41.5, "c": 12.0})
'b'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from detection_eval.nab_benchmark import (
    Outputs,
    category_of,
    category_scores,
    score_corpus,
)
from detection_eval.nab_corpus import NabCorpus
from detection_eval.nab_scorer import CostMatrix, score_file
from detection_eval.tables import text_table


def pick(means: Mapping[str, float]) -> str:
    """The best candidate by mean score; the first listed on ties."""
    return max(means, key=lambda name: (means[name], -list(means).index(name)))


@dataclass(frozen=True)
class CandidateOnFold:
    """One candidate on one fold: training score and held-out outcome, per seed."""

    train: list[float]
    held_out: list[float | None]  # normalised over the held-out category (None: no windows)
    detections: list[int]  # detections in the held-out category at the training threshold

    @property
    def train_mean(self) -> float:
        return float(np.mean(self.train))

    @property
    def held_out_mean(self) -> float | None:
        values = [v for v in self.held_out if v is not None]
        return float(np.mean(values)) if values else None

    def as_dict(self) -> dict:
        return {
            "train": self.train,
            "train_mean": self.train_mean,
            "held_out": self.held_out,
            "held_out_mean": self.held_out_mean,
            "detections": self.detections,
        }


@dataclass(frozen=True)
class Fold:
    """One held-out category: every candidate's outcome, the chosen one and the oracle."""

    category: str
    candidates: dict[str, CandidateOnFold]

    @property
    def chosen(self) -> str:
        return pick({name: c.train_mean for name, c in self.candidates.items()})

    @property
    def oracle(self) -> str:
        """The best on the held-out category itself (fewest detections without windows)."""
        if self.candidates[self.chosen].held_out_mean is None:
            return pick({n: -float(np.mean(c.detections)) for n, c in self.candidates.items()})
        return pick({n: c.held_out_mean for n, c in self.candidates.items()})

    def as_dict(self) -> dict:
        return {
            "category": self.category,
            "chosen": self.chosen,
            "oracle": self.oracle,
            "candidates": {name: c.as_dict() for name, c in self.candidates.items()},
        }


def subset(corpus: NabCorpus, keep) -> NabCorpus:
    return NabCorpus(files=[f for f in corpus.files if keep(category_of(f.key))])


def folds(
    corpus: NabCorpus,
    runs: Mapping[str, Sequence[Outputs]],
    cost: CostMatrix,
    profile: str = "standard",
) -> list[Fold]:
    """Every category held out in turn; `runs` maps each candidate to its per-seed outputs."""
    categories = sorted({category_of(f.key) for f in corpus.files})
    if len(categories) < 2:
        raise ValueError("leave-one-category-out needs at least two categories")
    out = []
    for category in categories:
        train = subset(corpus, lambda c, held=category: c != held)
        test = subset(corpus, lambda c, held=category: c == held)
        candidates = {}
        for name, seeds in runs.items():
            train_scores, held_out, detections = [], [], []
            for scores, _ in seeds:
                result = score_corpus(train, scores, {profile: cost})[profile]
                files = [
                    score_file(f.layout, scores[f.key], result.threshold, cost) for f in test.files
                ]
                held = category_scores(test, files, cost)[category]
                train_scores.append(result.normalised)
                held_out.append(held.normalised)
                detections.append(held.detections)
            candidates[name] = CandidateOnFold(train_scores, held_out, detections)
        out.append(Fold(category, candidates))
    return out


def _held_cell(candidate: CandidateOnFold) -> str:
    if candidate.held_out_mean is None:
        return f"{np.mean(candidate.detections):.0f} det"
    return f"{candidate.held_out_mean:.1f}"


def format_folds(result: Sequence[Fold], reference: str | None = None) -> str:
    """One row per held-out category: the chosen candidate, its training and held-out score,
    the oracle and its held-out score, and (when given) a reference candidate's held-out."""
    rows = []
    for fold in result:
        chosen, oracle = fold.candidates[fold.chosen], fold.candidates[fold.oracle]
        cells = [
            fold.chosen,
            f"{chosen.train_mean:.1f}",
            _held_cell(chosen),
            fold.oracle,
            _held_cell(oracle),
        ]
        if reference is not None:
            cells.append(_held_cell(fold.candidates[reference]))
        rows.append((fold.category, cells))
    columns = ["chosen on the others", "train", "held out", "best on it", "its score"]
    if reference is not None:
        columns.append(f"{reference} held out")
    return text_table("held-out category", columns, rows)
