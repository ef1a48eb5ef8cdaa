"""The trained selector: a lightweight network that scores reasoning units, and its checkpoint format.

Two backbones behind one interface (``ScorerConfig.backbone``):

- ``hidden``: the small model's hidden states of each unit's tokens (one layer, pooled), plus
  self-information, position and lexical flags (``selector.features``), through a small
  transformer or MLP head over the units. The hidden states of reasoning tokens were computed
  with the question in context, so the scores are question-aware; nearly free at inference, tied
  to one small model (hidden size, vocabulary, layer).
- ``encoder``: a pretrained text encoder (BERT/MiniLM family) reads ``question [SEP] reasoning``
  (so it sees the question), LoRA-tuned through peft; its token representations are pooled to units
  by character offsets and scored by the same head. Portable across model pairs.

Release format (``save_pretrained`` / ``from_pretrained``): a folder with ``config.json``,
``model.safetensors`` (the head; never a pickle), for ``encoder`` the peft adapter files
(``adapter_config.json`` + ``adapter_model.safetensors``; the base encoder is referenced by path,
hub id, or ``pkg://PACKAGE/SUBFOLDER`` for one shipped inside a Python package, in config.json), and a generated ``README.md`` model card.

A selector may carry a novelty fallback (``ScorerConfig.novelty_fallback``, ``TraceNovelty``): statistics
of its training traces' unit vectors, fitted when training ends, that tell a trace unlike them; such a
trace sends nothing, keeps the selfinfo selector's units (always, or only when the small model's answer
differs from the large model's direct answer), or is scored by a second head on the scalar features alone.
"""

from .checkpoint import SelectorCheckpoint, model_card
from .config import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    IncompatibleSelectorError,
    ScorerConfig,
    resolve_encoder,
)
from .model import TokenSelector
from .network import UnitScorerNet
from .novelty import TraceNovelty

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "IncompatibleSelectorError",
    "ScorerConfig",
    "SelectorCheckpoint",
    "TokenSelector",
    "TraceNovelty",
    "UnitScorerNet",
    "model_card",
    "resolve_encoder",
]
