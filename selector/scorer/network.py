"""The scorer network: unit vectors (pooled hidden states or encoder outputs) + scalar features -> scores."""

from __future__ import annotations

import torch
from torch import nn

from ..features import SCALAR_FEATURES, pool_per_unit
from .config import ScorerConfig

__all__ = ["UnitScorerNet"]


class UnitScorerNet(nn.Module):
    """Unit vectors (pooled hidden states or encoder outputs) + scalar features -> one score per unit."""

    def __init__(self, config: ScorerConfig, encoder: nn.Module | None = None):
        super().__init__()
        self.config = config
        if config.backbone == "hidden":
            if config.hidden_size is None:
                raise ValueError("hidden_size is not set: build the net once it is known (from the data)")
            in_dim = config.hidden_size
        else:
            if encoder is None or config.encoder_hidden_size is None:
                raise ValueError("the encoder backbone needs the loaded encoder")
            self.encoder = encoder
            in_dim = config.encoder_hidden_size
        self.adapters_merged = False
        d = config.d_model
        self.unit_norm = nn.LayerNorm(in_dim)
        self.unit_proj = nn.Linear(in_dim, d)
        self.scalar_proj = nn.Linear(len(SCALAR_FEATURES), d)
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
        """(B, U) scores; positions where ``unit_mask`` is False are padding (their scores mean nothing)."""
        mask = batch["unit_mask"]
        x = self.scalar_proj(batch["scalars"])
        if self.config.unit_vectors:  # else the scalar features alone (the feature ablation)
            vectors = self.unit_vectors(batch)
            magnitude = torch.log1p(vectors.norm(dim=-1, keepdim=True))
            x = self.unit_proj(self.unit_norm(vectors)) + self.magnitude_proj(magnitude) + x
        if self.config.head == "transformer":
            # no mask when nothing is padded (one trace at inference): CPU masked softmax is slow
            x = self.mixer(x, src_key_padding_mask=None if bool(mask.all()) else ~mask)
        else:
            for block in self.mixer:
                x = x + block(x)
        return self.out(x).squeeze(-1)
