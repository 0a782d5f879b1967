"""Chebyshev collocation on the wall-normal interval z ∈ [0, 1], as dense float64 numpy matrices.

Points are the Gauss–Lobatto nodes z_j = (1 − cos(πj/n))/2, j = 0 … n (n = N − 1), ascending from
the bottom wall z = 0 to the top wall z = 1. A field is represented by its values at the nodes, i.e. by
its degree-n interpolating polynomial; every operator below is exact on polynomials of degree ≤ n:

- :func:`diff_matrix`: d/dz (Trefethen, "Spectral Methods in MATLAB", SIAM 2000, ch. 6, with the
  negative-sum trick for the diagonal);
- :func:`to_coefficients` / :func:`evaluate`: node values ↔ Chebyshev coefficients, and evaluation of
  the interpolant at any points (exact spectral interpolation, e.g. onto a uniform grid);
- :func:`quadrature_weights`: Clenshaw–Curtis weights, exact for ∫₀¹ of polynomials of degree ≤ n;
- :func:`dealias_matrices`: the 3/2 rule in z — values on N nodes → values on ⌈3N/2⌉ nodes, and back by
  truncating the fine grid's Chebyshev series to degree n, so quadratic products are not aliased.

Matrices are built once in float64 (the solver casts them to its working precision).
"""

from __future__ import annotations

import math

import numpy as np


def nodes(n_points: int) -> np.ndarray:
    """Gauss–Lobatto nodes on [0, 1], ascending (z_0 = 0, z_{N−1} = 1)."""
    if n_points < 3:
        raise ValueError(f"need at least 3 Chebyshev points (got {n_points})")
    n = n_points - 1
    return 0.5 * (1.0 - np.cos(np.pi * np.arange(n_points) / n))


def _xi(n_points: int) -> np.ndarray:
    """The same nodes on [−1, 1] as ξ = 2z − 1 (ascending)."""
    return 2.0 * nodes(n_points) - 1.0


def diff_matrix(n_points: int) -> np.ndarray:
    """First-derivative matrix d/dz on the nodes of [0, 1]."""
    x = _xi(n_points)
    n = n_points - 1
    c = np.ones(n_points)
    c[0] = c[-1] = 2.0
    c *= (-1.0) ** np.arange(n_points)
    dx = x[:, None] - x[None, :]
    d = np.outer(c, 1.0 / c) / (dx + np.eye(n_points))
    d -= np.diag(d.sum(axis=1))
    del n
    return 2.0 * d  # dξ/dz = 2


def to_coefficients(n_points: int) -> np.ndarray:
    """Matrix C with a = C f: Chebyshev coefficients a_k (in ξ = 2z − 1) of the interpolant of node values f."""
    n = n_points - 1
    j = np.arange(n_points)
    # nodes ascending in ξ: ξ_j = −cos(πj/n) = cos(π(n−j)/n), so T_k(ξ_j) = cos(πk(n−j)/n)
    t = np.cos(np.pi * np.outer(j, n - j) / n)  # t[k, j] = T_k(ξ_j)
    cbar = np.ones(n_points)
    cbar[0] = cbar[-1] = 2.0
    return (2.0 / n) * t / cbar[None, :] / cbar[:, None]


def evaluate(n_points: int, z: np.ndarray) -> np.ndarray:
    """Matrix E with g = E f: the interpolant of node values f evaluated at points ``z`` in [0, 1]."""
    xi = np.clip(2.0 * np.asarray(z, dtype=np.float64) - 1.0, -1.0, 1.0)
    t = np.cos(np.outer(np.arccos(xi), np.arange(n_points)))  # T_k(ξ_i)
    return t @ to_coefficients(n_points)


def quadrature_weights(n_points: int) -> np.ndarray:
    """Clenshaw–Curtis weights w with Σ w_j f(z_j) = ∫₀¹ f dz for polynomials of degree ≤ N − 1."""
    k = np.arange(n_points)
    integrals = np.where(k % 2 == 0, 2.0 / (1.0 - k.astype(float) ** 2 + (k == 1)), 0.0)  # ∫_{−1}^{1} T_k dξ
    return 0.5 * integrals @ to_coefficients(n_points)


def fine_size(n_points: int) -> int:
    """Number of nodes of the 3/2-rule grid."""
    return math.ceil(3 * n_points / 2)


def dealias_matrices(n_points: int) -> tuple[np.ndarray, np.ndarray]:
    """(up, down): node values → values on the 3/2 grid, and fine values → coarse values of the fine
    interpolant truncated to degree N − 1."""
    nf = fine_size(n_points)
    up = evaluate(n_points, nodes(nf))
    coarse_of_coeffs = np.cos(np.outer(np.arccos(_xi(n_points)), np.arange(n_points)))  # T_k at coarse nodes
    down = coarse_of_coeffs @ to_coefficients(nf)[:n_points, :]
    return up, down
