"""The numbers behind the labelers: the surrogate fit, mask draws, R^2 and rank agreement.

Kept apart from ``training.labelers`` (which runs the large model) so they can be read, tested and
reused on their own: the label benchmark and the reliability figures use the same functions.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch
from torchmetrics.functional import r2_score as torchmetrics_r2

__all__ = ["draw_masks", "fit_surrogate", "r2_score", "spearman", "split_halves", "top_agreement"]


def fit_surrogate(
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    method: str = "ridge",
    alpha: float = 0.01,
    max_iter: int = 5000,
    tol: float = 1e-10,
) -> tuple[float, torch.Tensor]:
    """Fit f(S) ~ w0 + X @ w; returns (w0, w). The intercept is not penalized.

    ridge: min (1/m)||y - w0 - Xw||^2 + alpha ||w||^2 (closed form).
    lasso: min (1/2m)||y - w0 - Xw||^2 + alpha ||w||_1 (FISTA; deterministic).
    """
    X = torch.as_tensor(X, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64)
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise ValueError(f"need X (m, n) and y (m,), got {tuple(X.shape)} and {tuple(y.shape)}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    m, n = X.shape
    x_mean, y_mean = X.mean(0), y.mean()
    Xc, yc = X - x_mean, y - y_mean
    if method == "ridge":
        gram = Xc.T @ Xc + m * alpha * torch.eye(n, dtype=X.dtype)
        w = (
            torch.linalg.lstsq(gram, Xc.T @ yc).solution
            if alpha == 0
            else torch.linalg.solve(gram, Xc.T @ yc)
        )
    elif method == "lasso":
        lipschitz = float(torch.linalg.matrix_norm(Xc, ord=2)) ** 2 / m
        w = torch.zeros(n, dtype=X.dtype)
        if lipschitz > 0:
            step = 1.0 / lipschitz
            z, t = w.clone(), 1.0
            for _ in range(max_iter):
                grad = Xc.T @ (Xc @ z - yc) / m
                u = z - step * grad
                w_next = torch.sign(u) * torch.clamp(u.abs() - step * alpha, min=0.0)
                t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
                z = w_next + ((t - 1) / t_next) * (w_next - w)
                done = float((w_next - w).abs().max()) < tol
                w, t = w_next, t_next
                if done:
                    break
    else:
        raise ValueError(f"unknown surrogate fit {method!r}; expected 'ridge' or 'lasso'")
    return float(y_mean - x_mean @ w), w


def r2_score(y: torch.Tensor, pred: torch.Tensor) -> float | None:
    """Coefficient of determination; None when y is constant (R^2 undefined)."""
    y, pred = torch.as_tensor(y, dtype=torch.float64), torch.as_tensor(pred, dtype=torch.float64)
    if len(y) < 2 or float(((y - y.mean()) ** 2).sum()) < 1e-12:
        return None
    return float(torchmetrics_r2(pred, y))


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman rank correlation (ties get average ranks); None when either side is constant."""

    def ranks(x: torch.Tensor) -> torch.Tensor:
        order = torch.argsort(x, stable=True)
        r = torch.empty_like(x)
        r[order] = torch.arange(len(x), dtype=torch.float64)
        for v in torch.unique(x):  # average ranks over ties
            tie = x == v
            r[tie] = r[tie].mean()
        return r

    if len(a) != len(b):
        raise ValueError(f"spearman needs equal lengths, got {len(a)} and {len(b)}")
    if len(a) < 2:
        return None
    ra = ranks(torch.as_tensor(a, dtype=torch.float64))
    rb = ranks(torch.as_tensor(b, dtype=torch.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(ra.norm() * rb.norm())
    return None if denom < 1e-12 else float((ra * rb).sum()) / denom


def top_agreement(a: Sequence[float], b: Sequence[float], share: float = 0.25) -> float | None:
    """Share of the top ``share`` of units (at least one) that both rankings put there: the units a
    selector keeps at that budget. A full-ranking Spearman also scores the order of the many units
    that barely move f, which is noise for every estimator; this scores only what the relay keeps.
    None for fewer than 2 units (trivially equal). Ties break by position, as ``torch.argsort`` does."""
    if len(a) != len(b):
        raise ValueError(f"top_agreement needs equal lengths, got {len(a)} and {len(b)}")
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    if len(a) < 2:
        return None
    k = max(1, math.ceil(share * len(a)))
    top = [set(torch.argsort(torch.as_tensor(x, dtype=torch.float64), descending=True, stable=True)[:k].tolist())
           for x in (a, b)]  # fmt: skip
    return len(top[0] & top[1]) / k


def _stable_seed(seed: int, trace_id: str) -> int:
    digest = hashlib.sha256(f"{seed}:{trace_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def draw_masks(
    n_units: int, m: int, keep_prob: float, seed: int, trace_id: str, antithetic: bool = False
) -> torch.Tensor:
    """(m, n_units) bool keep-masks seeded from (seed, trace id), drawn one row after another.

    Row by row from one generator: the first k masks of a draw of m > k are the draw of k, so
    reruns, resumes and smaller m reuse the same masks. ``antithetic``: every odd row is the
    complement of the row before it (each unit is kept in exactly one mask of a pair, which
    cancels the shared part of f from the weight estimates).
    """
    gen = torch.Generator().manual_seed(_stable_seed(seed, trace_id))
    rows = []
    for k in range(m):
        if antithetic and k % 2 == 1:
            rows.append(~rows[-1])
        else:
            rows.append(torch.rand(n_units, generator=gen, dtype=torch.float64) < keep_prob)
    return torch.stack(rows) if rows else torch.zeros((0, n_units), dtype=torch.bool)


def split_halves(m: int, antithetic: bool = False) -> tuple[list[int], list[int]]:
    """Two disjoint halves of m random-mask indices (antithetic pairs stay together)."""
    group = (lambda k: (k // 2) % 2) if antithetic else (lambda k: k % 2)
    first = [k for k in range(m) if group(k) == 0]
    return first, [k for k in range(m) if group(k) == 1]
