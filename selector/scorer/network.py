"""The scorer network: unit vectors (pooled hidden states or encoder outputs) + scalar features -> scores."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from ..features import SCALAR_FEATURES, pool_per_unit
from .config import ScorerConfig
from .novelty import TraceNovelty

__all__ = ["UnitScorerNet"]


class UnitScorerNet(nn.Module):
    """Unit vectors (pooled hidden states or encoder outputs) + scalar features -> one score per unit."""

    def __init__(self, config: ScorerConfig, encoder: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.adapters_merged = False
        d = config.d_model
        if encoder is not None:
            self.encoder = encoder
        if config.unit_vectors:
            if config.backbone == "hidden":
                if config.hidden_size is None:
                    raise ValueError("hidden_size is not set: build the net once it is known (from the data)")
                in_dim = config.hidden_size
            else:
                if encoder is None or config.encoder_hidden_size is None:
                    raise ValueError("the encoder backbone needs the loaded encoder")
                in_dim = config.encoder_hidden_size
            self.unit_norm = nn.LayerNorm(in_dim)
            self.unit_proj = nn.Linear(in_dim, d)
        self.scalar_proj = nn.Linear(len(SCALAR_FEATURES), d)  # between the two: the layers' initial
        if config.unit_vectors:  # draws stay in the order released checkpoints were trained with
            self.magnitude_proj = nn.Linear(1, d)  # LayerNorm drops the unit vector's length: give it back
        if config.head == "transformer":
            layer = nn.TransformerEncoderLayer(
                d,
                config.head_heads,
                2 * d,
                config.dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            self.mixer = nn.TransformerEncoder(layer, config.head_layers, enable_nested_tensor=False)
        else:
            blocks = []
            for _ in range(config.head_layers):
                blocks += [
                    nn.LayerNorm(d),
                    nn.Linear(d, 2 * d),
                    nn.GELU(),
                    nn.Dropout(config.dropout),
                    nn.Linear(2 * d, d),
                ]
            self.mixer = nn.ModuleList(nn.Sequential(*blocks[k : k + 5]) for k in range(0, len(blocks), 5))
        self.out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 1))
        self.fallback: UnitScorerNet | None = None
        self.novelty: TraceNovelty | None = None
        if config.novelty_fallback == "scalars":
            # built last and from a forked random state: the main head's weights and dropout draws are
            # the same with or without the fallback, so turning it on changes nothing else
            with torch.random.fork_rng(devices=[]):
                self.fallback = UnitScorerNet(replace(config, unit_vectors=False, novelty_fallback=None))
        if config.novelty_fallback:
            self.novelty = TraceNovelty(in_dim, config.novelty_components)
        self.last_fallback: torch.Tensor | None = None
        """(B,) which traces of the last inference batch the novelty fallback handled (None: no fallback)."""

    def merge_adapters(self, merged: bool = True) -> None:
        """Fold the encoder's LoRA adapters into its weights for inference (about 25% faster on
        CPU: no separate low-rank matmuls), or take them back out before training."""
        if self.config.backbone != "encoder" or merged == self.adapters_merged:
            return
        with torch.no_grad():
            (self.encoder.merge_adapter if merged else self.encoder.unmerge_adapter)()
        self.adapters_merged = merged

    def unit_vectors(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, U, in_dim) one vector per unit."""
        if self.config.backbone == "hidden":
            return batch["unit_hidden"]
        if self.training and self.adapters_merged:
            self.merge_adapters(False)  # gradients must reach the adapters again
        b, u = batch["unit_mask"].shape
        kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if "token_type_ids" in batch:
            kwargs["token_type_ids"] = batch["token_type_ids"]
        hidden = self.encoder(**kwargs).last_hidden_state  # (windows, L, E)
        tokens = hidden[batch["tok_window"], batch["tok_pos"]]  # reasoning tokens inside a unit
        pooled = pool_per_unit(tokens, batch["tok_target"], b * u, self.config.pooling)
        return pooled.view(b, u, -1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, U) scores; positions where ``unit_mask`` is False are padding (their scores mean nothing).

        With a fitted novelty fallback, in eval mode, traces far from the training data are scored by
        the scalar-only head instead, or below the score floor everywhere (``nothing``: none of their
        units is sent); ``last_fallback`` says which traces (``selfinfo``, ``disagreement``: the net leaves their scores
        as they are and ``TokenSelector`` replaces them). In training a ``scalars`` head learns from
        every trace beside the main one (``training.module`` adds its loss)."""
        if not self.config.unit_vectors:  # the scalar features alone (the feature ablation, the fallback)
            return self._head(self.scalar_proj(batch["scalars"]), batch["unit_mask"])
        vectors = self.unit_vectors(batch)
        scores = self._head(self._embed(batch, vectors), batch["unit_mask"])
        self.last_fallback = None
        if self.novelty is not None and not self.training and self.novelty.fitted:
            novel = self.novelty.novel(vectors, batch["unit_mask"])
            self.last_fallback = novel
            if bool(novel.any()):
                if self.fallback is not None:
                    instead = self.fallback(batch).to(scores.dtype)
                    scores = torch.where(novel[:, None], instead, scores)
                elif self.config.novelty_fallback == "nothing":
                    # every unit below the floor, whatever the budget
                    instead = torch.full_like(scores, self.config.min_score - 1.0)
                    scores = torch.where(novel[:, None], instead, scores)
        return scores

    def trace_vectors(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, D) what the novelty model measures: the mean layer-normed unit vector of each trace."""
        return TraceNovelty.trace_vectors(self.unit_vectors(batch), batch["unit_mask"])

    def _embed(self, batch: dict[str, torch.Tensor], vectors: torch.Tensor) -> torch.Tensor:
        magnitude = torch.log1p(vectors.norm(dim=-1, keepdim=True))
        x = self.scalar_proj(batch["scalars"])
        return self.unit_proj(self.unit_norm(vectors)) + self.magnitude_proj(magnitude) + x

    def _head(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.config.head == "transformer":
            # no mask when nothing is padded (one trace at inference): CPU masked softmax is slow
            x = self.mixer(x, src_key_padding_mask=None if bool(mask.all()) else ~mask)
        else:
            for block in self.mixer:
                x = x + block(x)
        return self.out(x).squeeze(-1)
