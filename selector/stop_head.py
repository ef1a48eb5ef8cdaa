"""A trained stop head: a linear probe on the small model's hidden state at a unit boundary that
predicts whether the reasoning so far already states the answer it will end with.

It is the ``head`` signal of ``selector.early_stop``: unlike a trial answer it costs no decoding at a
check (the hidden state is already computed by the step that produced the boundary), so it can be
asked at every sentence. Its training labels are gold-free (the small model's own final answer
appears in the prefix), measured on the small model's traces (``scripts/train_stop_head.py``).

A release folder holds ``config.json`` (the init arguments), ``model.safetensors`` and a ``README.md``
card, through huggingface_hub's ``PyTorchModelHubMixin`` (``save_pretrained`` / ``from_pretrained`` /
``push_to_hub``); loading is strict (every tensor, no other).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from .agent_types import _looks_local
from .answers import contains_answer

__all__ = ["StopHead", "answer_stated_labels", "unit_boundaries"]


def unit_boundaries(tokenizer, token_ids: list[int]) -> list[int]:
    """Where ``selector.early_stop``'s stream checks: for each new unit, the number of tokens kept
    (the unit's opening token excluded), in order. Training reads the same points as inference."""
    from .early_stop import _count_units

    points, before = [], 0
    for k in range(1, len(token_ids) + 1):
        now = _count_units(tokenizer.decode(token_ids[:k], skip_special_tokens=True))
        if now > before and now - 1 >= 1:
            points.append(k - 1)
        before = now
    return points


def answer_stated_labels(
    tokenizer, token_ids: list[int], points: list[int], answer: str | None
) -> list[bool]:
    """Per boundary: does the reasoning so far already state ``answer`` (the trace's own final
    answer)? A trace without an extracted answer is never done."""
    if not answer or not str(answer).strip():
        return [False] * len(points)
    return [
        contains_answer(tokenizer.decode(token_ids[:k], skip_special_tokens=True), answer) for k in points
    ]


class StopHead(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="tokenrelay",
    tags=["tokenrelay", "early-stop"],
):
    """p(done | hidden state at a boundary) = sigmoid(w · (h − mean) / scale + b)."""

    def __init__(
        self,
        hidden_size: int,
        hidden_layer: int = -1,
        small_model: str | None = None,
        threshold: float = 0.9,
        card: dict | None = None,
    ):
        super().__init__()
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be >= 1, got {hidden_size}")
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.hidden_size, self.hidden_layer = hidden_size, hidden_layer
        self.small_model, self.threshold = small_model, threshold
        self.card = dict(card or {})
        """What the card reports (training data, validation figures), kept in config.json."""
        self.register_buffer("mean", torch.zeros(hidden_size))
        self.register_buffer("scale", torch.ones(hidden_size))
        self.linear = nn.Linear(hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Stop probabilities of (..., hidden_size) states."""
        z = (hidden.float() - self.mean) / self.scale
        return torch.sigmoid(self.linear(z)[..., 0])

    @torch.no_grad()
    def prob(self, hidden: torch.Tensor) -> float:
        return float(self(hidden.reshape(-1, self.hidden_size)[-1:])[0])

    def check_compatible(self, model_config) -> None:
        """Refuse a small model whose hidden states the head was not fitted on (size, name)."""
        size = getattr(model_config, "hidden_size", None)
        if size is not None and size != self.hidden_size:
            raise ValueError(
                f"the stop head reads {self.hidden_size}-wide hidden states, the small model has {size}: "
                "train one for this model (scripts/train_stop_head.py)"
            )
        layers = getattr(model_config, "num_hidden_layers", None)
        if layers is not None and not -layers - 1 <= self.hidden_layer <= layers:
            raise ValueError(
                f"the stop head's hidden_layer {self.hidden_layer} is out of range ({layers} layers)"
            )
        name = getattr(model_config, "_name_or_path", "") or ""
        if self.small_model and name and Path(name).name.lower() != Path(self.small_model).name.lower():
            raise ValueError(
                f"the stop head was trained for {self.small_model!r}, the small model is {name!r}"
            )

    def fit(self, hidden: torch.Tensor, labels: torch.Tensor, weight_decay: float = 1e-3, steps: int = 300):
        """Logistic regression (L-BFGS, L2 on the weights) on standardized states; returns the final loss."""
        x, y = hidden.float(), labels.float()
        if x.ndim != 2 or x.shape[1] != self.hidden_size or len(x) != len(y):
            raise ValueError(f"expected ({len(y)}, {self.hidden_size}) states, got {tuple(x.shape)}")
        if not 0 < float(y.mean()) < 1:
            raise ValueError("the stop head needs boundaries of both kinds (done and not done) to fit")
        with torch.no_grad():
            self.mean.copy_(x.mean(0))
            self.scale.copy_(x.std(0) + 1e-4)
        z = (x - self.mean) / self.scale
        opt = torch.optim.LBFGS(self.linear.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(self.linear(z)[:, 0], y)
            loss = loss + weight_decay * self.linear.weight.pow(2).sum()
            loss.backward()
            return loss

        loss = opt.step(closure)
        if not math.isfinite(float(loss.detach())):
            raise RuntimeError("the stop head's fit diverged")
        return float(loss.detach())

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> StopHead:
        """Load a release folder or hub id, strictly (every tensor present, no other)."""
        text = str(pretrained_model_name_or_path)
        local = Path(text).expanduser()
        if local.exists():
            if not (local / "config.json").is_file():
                raise FileNotFoundError(f"{text!r} has no config.json: not a stop head folder")
        elif _looks_local(text):
            raise FileNotFoundError(f"stop head folder {text!r} does not exist")
        kwargs.setdefault("strict", True)
        if not local.exists():
            try:
                return super().from_pretrained(text, **kwargs)
            except Exception as err:  # hub errors come in many types; all mean "not available"
                raise FileNotFoundError(
                    f"stop head {text!r} is not a local folder and the hub could not provide it ({err})"
                ) from err
        return super().from_pretrained(local, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs):
        """Write config.json, model.safetensors and README.md (the card)."""
        out = super().save_pretrained(save_directory, **kwargs)
        (Path(save_directory) / "README.md").write_text(self.model_card())
        return out

    def model_card(self) -> str:
        lines = [
            "---", "library_name: tokenrelay", "tags: [tokenrelay, early-stop]", "---", "",
            "# TokenRelay stop head", "",
            "A linear probe on the small model's hidden state at a sentence boundary: the probability that "
            "the reasoning so far already states the answer it will end with. Used by the relay's "
            "`early_stop: head` (with `stop_head: THIS_FOLDER`); it stops the small model at the first "
            f"boundary whose probability reaches `stop_threshold` (recommended here: {self.threshold}).", "",
            f"- small model: `{self.small_model}`, hidden layer {self.hidden_layer}, width {self.hidden_size}",
        ]  # fmt: skip
        for key, value in sorted(self.card.items()):  # config.json stores the card with sorted keys
            lines.append(f"- {key}: {value}")
        return "\n".join(lines) + "\n"
