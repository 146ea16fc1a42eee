"""Small dense linear algebra, vectorized over stacks of matrices (one per machine)."""

from __future__ import annotations

import numpy as np

__all__ = ["solve_positive"]


def solve_positive(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Solve A X = B for a stack of small symmetric positive definite A (k, p, p), B (k, p, q).

    Cholesky written out over p and vectorized over the stack: numpy.linalg.solve pays a
    fixed cost per matrix, which made the fit view the fleet's bottleneck (4x4 systems for
    thousands of machines every reading).

    >>> A = np.array([[[4.0, 2.0], [2.0, 3.0]]])
    >>> solve_positive(A, np.array([[[2.0], [1.0]]])).round(6).tolist()
    [[[0.5], [0.0]]]
    """
    p = A.shape[1]
    L = np.zeros_like(A)
    for j in range(p):
        L[:, j, j] = np.sqrt(A[:, j, j] - (L[:, j, :j] ** 2).sum(axis=1))
        for i in range(j + 1, p):
            dot = (L[:, i, :j] * L[:, j, :j]).sum(axis=1)
            L[:, i, j] = (A[:, i, j] - dot) / L[:, j, j]
    Y = np.zeros_like(B)
    for i in range(p):
        Y[:, i] = (B[:, i] - np.einsum("kj,kjq->kq", L[:, i, :i], Y[:, :i])) / L[:, i, i, None]
    X = np.zeros_like(B)
    for i in reversed(range(p)):
        later = np.einsum("kj,kjq->kq", L[:, i + 1 :, i], X[:, i + 1 :])
        X[:, i] = (Y[:, i] - later) / L[:, i, i, None]
    return X
