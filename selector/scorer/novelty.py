"""How far a trace lies from the traces a selector was trained on, to know when not to trust its
unit vectors.

A selector's hidden-state (or encoder) features carry its wins on the tasks it was trained on and its
losses on a task it never saw: it predicts gains for kinds of units it has no labels for. The fix here
is the classic one for a model outside its data: notice it, and do something safe instead
(``ScorerConfig.novelty_fallback``: send nothing, the selfinfo selector — always or only where the two
models' answers differ — or a scalar-feature head). Novelty is measured per trace, on the mean of its layer-normed unit vectors, by a
probabilistic-PCA style distance to the training traces: the Mahalanobis distance inside the top
``components`` principal directions plus the residual outside them, each scaled to about 1 on the
training traces and averaged. The threshold is a quantile of the validation traces' novelty, so about
``1 - quantile`` of in-distribution traces fall back by design. Leaving one training task out of the
fit (docs/results.md) flags 100% of a new task family's traces at 1% of in-distribution ones, and
none of a new setting of a task it has (simple_equations with other term counts).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TraceNovelty"]


class TraceNovelty(nn.Module):
    """Trace-level novelty of unit vectors; its statistics are buffers, saved with the selector."""

    def __init__(self, in_dim: int, components: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("basis", torch.zeros(components, in_dim))
        self.register_buffer("variance", torch.ones(components))
        self.register_buffer("residual", torch.ones(()))
        self.register_buffer("threshold", torch.tensor(float("inf")))
        """Traces above it are novel; inf until ``fit`` (nothing falls back)."""

    @property
    def fitted(self) -> bool:
        return bool(torch.isfinite(self.threshold))

    @staticmethod
    def trace_vectors(vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, U, D) unit vectors + (B, U) mask -> (B, D) mean of the layer-normed units of each trace."""
        normed = F.layer_norm(vectors.float(), vectors.shape[-1:]) * mask[..., None]
        return normed.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)

    def score(self, traces: torch.Tensor) -> torch.Tensor:
        """(B, D) trace vectors -> (B,) novelty (about 1 on the training traces)."""
        centered = traces.float() - self.mean
        projected = centered @ self.basis.T
        inside = (projected**2 / self.variance).mean(-1)
        outside = ((centered**2).sum(-1) - (projected**2).sum(-1)).clamp(min=0) / self.residual
        return 0.5 * (inside + outside)

    def novel(self, vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B,) True where a trace is further from the training traces than the threshold."""
        return self.score(self.trace_vectors(vectors, mask)) > self.threshold

    @torch.no_grad()
    def fit(self, train: torch.Tensor, calibration: torch.Tensor, quantile: float) -> dict:
        """Fit the statistics on (N, D) training trace vectors; threshold at ``quantile`` of the
        (M, D) calibration traces' novelty (held-out traces: training ones sit closer than new ones).
        Returns what the model card reports."""
        if len(train) < 2 or len(calibration) < 1:
            raise ValueError(
                f"the novelty fallback needs >= 2 training and >= 1 validation traces, got {len(train)} and {len(calibration)}"
            )
        train = train.float()
        mean = train.mean(0)
        centered = train - mean
        k = min(self.basis.shape[0], len(train) - 1, train.shape[1])
        _, _, vt = torch.linalg.svd(centered, full_matrices=False)
        basis = torch.zeros_like(self.basis)
        basis[:k] = vt[:k]
        projected = centered @ basis.T
        variance = torch.ones_like(self.variance)
        variance[:k] = projected[:, :k].var(0).clamp(min=1e-8)
        residual = ((centered**2).sum(-1) - (projected**2).sum(-1)).clamp(min=0).mean().clamp(min=1e-8)
        self.mean.copy_(mean)
        self.basis.copy_(basis)
        self.variance.copy_(variance)
        self.residual.copy_(residual)
        scores = self.score(calibration)
        self.threshold.copy_(torch.quantile(scores, quantile))
        return {
            "traces_fitted": len(train),
            "traces_calibrated": len(calibration),
            "components": k,
            "threshold": float(self.threshold),
            "calibration_share_novel": float((scores > self.threshold).float().mean()),
        }
