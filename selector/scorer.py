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
(``adapter_config.json`` + ``adapter_model.safetensors``; the base encoder is referenced by path
or hub id in config.json), and a generated ``README.md`` model card.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from .features import SCALAR_FEATURES, pool_per_unit, token_units, unit_hidden, unit_scalars
from .reasoning import ReasoningView
from .units import GRANULARITIES, assign_spans_to_units

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "IncompatibleSelectorError",
    "ScorerConfig",
    "TokenSelector",
    "UnitScorerNet",
    "model_card",
]

CHECKPOINT_FORMAT = "tokenrelay-selector/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
CARD_FILE = "README.md"
BACKBONES = ("hidden", "encoder")
HEADS = ("transformer", "mlp")


class CheckpointError(ValueError):
    """A selector checkpoint folder is incomplete or does not match its config."""


class IncompatibleSelectorError(ValueError):
    """A selector checkpoint does not fit the small model or encoder it is used with."""


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
        self.lora_targets = list(self.lora_targets)

    @classmethod
    def from_dict(cls, data: dict) -> ScorerConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"{CONFIG_FILE}: unknown scorer settings {unknown} (a newer format?)")
        return cls(**data)


# --------------------------------------------------------------------------- the network


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
        vectors = self.unit_vectors(batch)
        magnitude = torch.log1p(vectors.norm(dim=-1, keepdim=True))
        x = (
            self.unit_proj(self.unit_norm(vectors))
            + self.magnitude_proj(magnitude)
            + self.scalar_proj(batch["scalars"])
        )
        if self.config.head == "transformer":
            # no mask when nothing is padded (one trace at inference): CPU masked softmax is slow
            x = self.mixer(x, src_key_padding_mask=None if bool(mask.all()) else ~mask)
        else:
            for block in self.mixer:
                x = x + block(x)
        return self.out(x).squeeze(-1)


# --------------------------------------------------------------------------- the selector


class TokenSelector:
    """A trained unit scorer (implements ``selector.reasoning.UnitScorer``): higher score = keep first.

    ``featurize`` + ``collate`` turn views into tensors (the training module uses them too, so
    training and inference see identical inputs); ``__call__`` scores one view, ``score_views`` many.
    """

    def __init__(self, config: ScorerConfig, net: UnitScorerNet | None = None, card: dict | None = None):
        self.config = config
        self.card = dict(card or {})
        self.encoder_tokenizer = None
        self._encoder_type_ids = False
        if config.backbone == "encoder":
            if net is None:
                net = UnitScorerNet(config, self._load_encoder(config))
            else:
                self._load_encoder_tokenizer()
        self.net = net if net is not None else UnitScorerNet(config)
        self.name = f"selector:{config.backbone}"

    # ------------------------------------------------------------------ encoder
    def _load_encoder_tokenizer(self) -> None:
        from transformers import AutoConfig, AutoTokenizer

        cfg = self.config
        try:
            self.encoder_tokenizer = AutoTokenizer.from_pretrained(cfg.encoder)
            enc_config = AutoConfig.from_pretrained(cfg.encoder)
        except OSError as err:
            raise FileNotFoundError(
                f"could not load the selector's encoder {cfg.encoder!r}: not a local folder, and the hub "
                f"could not provide it ({err}); pass encoder=PATH to from_pretrained if it moved"
            ) from err
        if not getattr(self.encoder_tokenizer, "is_fast", False):
            raise ValueError(f"encoder {cfg.encoder!r}: a fast tokenizer is needed for character offsets")
        for name, have in (
            ("encoder_hidden_size", enc_config.hidden_size),
            ("encoder_vocab_size", enc_config.vocab_size),
        ):
            want = getattr(cfg, name)
            if want is not None and want != have:
                raise IncompatibleSelectorError(
                    f"the selector was trained on an encoder with {name.removeprefix('encoder_')} {want}, "
                    f"but {cfg.encoder!r} has {have}: it is not the encoder this checkpoint was trained with"
                )
            setattr(cfg, name, have)
        self._encoder_type_ids = getattr(enc_config, "type_vocab_size", 0) >= 2
        self._encoder_num_layers = getattr(enc_config, "num_hidden_layers", None)
        tok = self.encoder_tokenizer
        self._cls = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        self._sep = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        if self._cls is None or self._sep is None:
            raise ValueError(f"encoder {cfg.encoder!r}: its tokenizer has no [CLS]/[SEP] (or bos/eos) token")

    def _load_encoder(self, config: ScorerConfig) -> nn.Module:
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModel

        self._load_encoder_tokenizer()
        kwargs = {}
        if config.encoder_layers is not None:
            available = self._encoder_num_layers
            if available is not None and config.encoder_layers > available:
                raise ValueError(
                    f"encoder_layers={config.encoder_layers}, but {config.encoder!r} has {available} layers"
                )
            kwargs["num_hidden_layers"] = config.encoder_layers  # the later layers' weights are not loaded
        with _quiet_transformers():
            base = AutoModel.from_pretrained(config.encoder, **kwargs)
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.lora_targets),
            bias="none",
        )
        return get_peft_model(base, lora)

    # ------------------------------------------------------------------ features
    def featurize(self, view: ReasoningView) -> dict:
        """Model inputs of one view (CPU tensors and lists); ``collate`` batches them."""
        cfg = self.config
        spans_units = token_units(view, as_array=True)
        item: dict = {
            "n_units": len(view.units),
            "scalars": unit_scalars(view, spans_units, require_token_signals=cfg.self_information),
        }
        if cfg.backbone == "hidden":
            hidden = view.hidden_states
            if hidden is not None and hidden.shape[-1] != cfg.hidden_size:
                raise IncompatibleSelectorError(
                    f"the view's hidden states are {hidden.shape[-1]} wide, but this selector reads "
                    f"{cfg.hidden_size}-wide states of layer {cfg.hidden_layer} of {cfg.small_model!r}"
                )
            item["unit_hidden"] = unit_hidden(view, cfg.pooling, spans_units)
            return item
        item.update(self._encoder_windows(view))
        return item

    def _encoder_windows(self, view: ReasoningView) -> dict:
        """``[CLS] question [SEP] reasoning-chunk [SEP]`` windows covering all reasoning tokens."""
        cfg, tok = self.config, self.encoder_tokenizer
        q_ids = tok(
            view.question, add_special_tokens=False, truncation=True, max_length=cfg.max_question_tokens
        )["input_ids"]
        enc = tok(view.reasoning, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        unit_of = assign_spans_to_units([tuple(o) for o in offsets], view.units)
        room = cfg.max_length - len(q_ids) - 3
        head = [self._cls, *q_ids, self._sep]
        windows, types, tok_window, tok_pos, tok_unit = [], [], [], [], []
        for w, start in enumerate(range(0, max(1, len(ids)), room)):
            chunk = ids[start : start + room]
            windows.append([*head, *chunk, self._sep])
            types.append([0] * len(head) + [1] * (len(chunk) + 1))
            for j in range(len(chunk)):
                u = unit_of[start + j]
                if u >= 0:
                    tok_window.append(w)
                    tok_pos.append(len(head) + j)
                    tok_unit.append(u)
        return {
            "windows": windows,
            "types": types,
            "tok_window": tok_window,
            "tok_pos": tok_pos,
            "tok_unit": tok_unit,
        }

    def collate(self, items: Sequence[dict]) -> dict[str, torch.Tensor]:
        """Pad featurized views to one batch: (B, U) unit mask, (B, U, S) scalars, backbone inputs."""
        b = len(items)
        u = max(1, max(it["n_units"] for it in items))
        n_scalars = len(SCALAR_FEATURES)
        mask = torch.zeros(b, u, dtype=torch.bool)
        scalars = torch.zeros(b, u, n_scalars)
        for i, it in enumerate(items):
            n = it["n_units"]
            mask[i, :n] = True
            scalars[i, :n] = it["scalars"]
        batch = {"unit_mask": mask, "scalars": scalars}
        if self.config.backbone == "hidden":
            if b == 1 and items[0]["n_units"] == u:  # one trace (inference): no padded copy
                batch["unit_hidden"] = items[0]["unit_hidden"][None]
                return batch
            hidden = torch.zeros(b, u, self.config.hidden_size)
            for i, it in enumerate(items):
                hidden[i, : it["n_units"]] = it["unit_hidden"]
            batch["unit_hidden"] = hidden
            return batch
        windows = [w for it in items for w in it["windows"]]
        length = max(len(w) for w in windows)
        pad = self.encoder_tokenizer.pad_token_id or 0
        input_ids = torch.full((len(windows), length), pad, dtype=torch.long)
        attention = torch.zeros(len(windows), length, dtype=torch.long)
        type_ids = torch.zeros(len(windows), length, dtype=torch.long)
        tok_window, tok_pos, tok_target = [], [], []
        w0 = 0
        for i, it in enumerate(items):
            for w, t in zip(it["windows"], it["types"]):
                input_ids[w0, : len(w)] = torch.tensor(w)
                attention[w0, : len(w)] = 1
                type_ids[w0, : len(t)] = torch.tensor(t)
                w0 += 1
            first = w0 - len(it["windows"])
            tok_window += [first + k for k in it["tok_window"]]
            tok_pos += it["tok_pos"]
            tok_target += [i * u + k for k in it["tok_unit"]]
        batch.update(
            input_ids=input_ids,
            attention_mask=attention,
            tok_window=torch.tensor(tok_window, dtype=torch.long),
            tok_pos=torch.tensor(tok_pos, dtype=torch.long),
            tok_target=torch.tensor(tok_target, dtype=torch.long),
        )
        if self._encoder_type_ids:
            batch["token_type_ids"] = type_ids
        return batch

    # ------------------------------------------------------------------ scoring
    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device) -> TokenSelector:
        self.net.to(device)
        return self

    def eval(self) -> TokenSelector:
        self.net.eval()
        return self

    def score_views(self, views: Sequence[ReasoningView], batch_size: int = 16) -> list[list[float]]:
        """One score list per view (batched); views without units get []."""
        out: list[list[float]] = [[] for _ in views]
        todo = [k for k, v in enumerate(views) if v.units]
        was_training = self.net.training
        if was_training:  # walking every module to flip the flag costs ~0.5 ms: only when needed
            self.net.eval()
        self.net.merge_adapters()
        try:
            with torch.inference_mode():
                for start in range(0, len(todo), batch_size):
                    chunk = todo[start : start + batch_size]
                    items = [self.featurize(views[k]) for k in chunk]
                    batch = {k: v.to(self.device) for k, v in self.collate(items).items()}
                    scores = self.net(batch).float().cpu()
                    for row, (k, it) in enumerate(zip(chunk, items)):
                        out[k] = scores[row, : it["n_units"]].tolist()
        finally:
            if was_training:
                self.net.train()
        return out

    def __call__(self, view: ReasoningView) -> list[float]:
        return self.score_views([view])[0]

    # ------------------------------------------------------------------ compatibility
    def check_compatible(self, small_agent=None) -> None:
        """Raise ``IncompatibleSelectorError`` when this selector cannot read ``small_agent``'s signals.

        The ``hidden`` backbone reads one small model's hidden states: its hidden size, vocabulary,
        layer count and name must match the checkpoint. The ``encoder`` backbone only needs its own
        encoder, checked when it is loaded, so any small model fits.
        """
        cfg = self.config
        if cfg.backbone != "hidden" or small_agent is None:
            return
        model_cfg = small_agent.model.config
        model_cfg = getattr(model_cfg, "text_config", None) or model_cfg
        name = str(getattr(small_agent, "name", ""))
        where = f"selector trained on {cfg.small_model!r} (layer {cfg.hidden_layer})"
        if cfg.hidden_size is not None and model_cfg.hidden_size != cfg.hidden_size:
            raise IncompatibleSelectorError(
                f"{where} reads {cfg.hidden_size}-wide hidden states, but small model {name!r} has hidden "
                f"size {model_cfg.hidden_size}: use a selector trained for this small model (or the encoder backbone)"
            )
        if cfg.small_vocab_size is not None and model_cfg.vocab_size != cfg.small_vocab_size:
            raise IncompatibleSelectorError(
                f"{where} expects a vocabulary of {cfg.small_vocab_size}, but small model {name!r} has "
                f"{model_cfg.vocab_size}: its token spans and hidden states would not line up"
            )
        n_layers = model_cfg.num_hidden_layers
        if not -n_layers - 1 <= cfg.hidden_layer <= n_layers:
            raise IncompatibleSelectorError(f"{where}: small model {name!r} has only {n_layers} layers")
        if cfg.small_model and _model_key(cfg.small_model) != _model_key(name):
            raise IncompatibleSelectorError(
                f"{where} is used with small model {name!r}: hidden states of another model mean something else "
                "even at the same width; use a selector trained for it"
            )

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, save_directory: str | os.PathLike, card: dict | None = None) -> Path:
        """Write the release folder: config.json, model.safetensors (+ adapter files), README.md."""
        from safetensors.torch import save_file

        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        if card:
            self.card.update(card)
        head = {
            k: v.detach().cpu().contiguous()
            for k, v in self.net.state_dict().items()
            if not k.startswith("encoder.")
        }
        if self.config.backbone == "encoder":
            self.net.encoder.save_pretrained(str(out), safe_serialization=True)
        save_file(head, str(out / WEIGHTS_FILE), metadata={"format": CHECKPOINT_FORMAT})
        config = {"format": CHECKPOINT_FORMAT, "scorer": asdict(self.config), "card": self.card}
        (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=False) + "\n")
        (out / CARD_FILE).write_text(model_card(self.config, self.card))  # replaces peft's stub card
        return out

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, *, device: str = "cpu", encoder: str | None = None
    ) -> TokenSelector:
        """Load a release folder or hub id strictly (every tensor present, no extra, shapes equal).

        ``encoder`` overrides where the base encoder is found (if it moved since training).
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = _resolve_checkpoint(name_or_path)
        config_path = folder / CONFIG_FILE
        if not config_path.is_file():
            raise CheckpointError(f"selector checkpoint {str(folder)!r} is missing {CONFIG_FILE}")
        try:
            raw = json.loads(config_path.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{config_path}: not valid JSON ({err})") from err
        if raw.get("format") != CHECKPOINT_FORMAT or "scorer" not in raw:
            raise CheckpointError(
                f"{config_path}: not a TokenRelay selector config (format {raw.get('format')!r}, "
                f"expected {CHECKPOINT_FORMAT!r})"
            )
        scorer = dict(raw["scorer"])
        if encoder is not None:
            scorer["encoder"] = str(encoder)
        config = ScorerConfig.from_dict(scorer)
        needed = [WEIGHTS_FILE] + (
            [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE] if config.backbone == "encoder" else []
        )
        for name in needed:
            if not (folder / name).is_file():
                raise CheckpointError(f"selector checkpoint {str(folder)!r} is missing {name}")
        selector = cls(config, card=raw.get("card"))
        try:
            head = load_file(str(folder / WEIGHTS_FILE))
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{folder / WEIGHTS_FILE}: unreadable safetensors file ({err})") from err
        expected = {k: v for k, v in selector.net.state_dict().items() if not k.startswith("encoder.")}
        _check_tensors(head, expected, folder / WEIGHTS_FILE)
        missing, unexpected = selector.net.load_state_dict(head, strict=False)
        if unexpected or any(not k.startswith("encoder.") for k in missing):  # cannot happen after the check
            raise CheckpointError(f"{folder / WEIGHTS_FILE}: tensors do not match the selector")
        if config.backbone == "encoder":
            selector._load_adapter(folder)
        return selector.to(device).eval()

    def _load_adapter(self, folder: Path) -> None:
        from peft import get_peft_model_state_dict, set_peft_model_state_dict
        from safetensors.torch import load_file

        adapter_cfg = json.loads((folder / ADAPTER_CONFIG_FILE).read_text())
        for key, mine in (("r", self.config.lora_r), ("lora_alpha", self.config.lora_alpha)):
            if adapter_cfg.get(key) != mine:
                raise CheckpointError(
                    f"{folder / ADAPTER_CONFIG_FILE}: {key}={adapter_cfg.get(key)} but {CONFIG_FILE} says {mine}"
                )
        path = folder / ADAPTER_WEIGHTS_FILE
        state = load_file(str(path))
        expected = get_peft_model_state_dict(self.net.encoder)
        _check_tensors(state, expected, path)
        result = set_peft_model_state_dict(self.net.encoder, state)
        if getattr(result, "unexpected_keys", None):
            raise CheckpointError(f"{path}: unexpected tensors {sorted(result.unexpected_keys)[:5]}")

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str | None = None,
    ):
        """Upload the release folder to a model hub repository (created if needed)."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp)
            return api.upload_folder(
                repo_id=repo_id,
                folder_path=tmp,
                commit_message=commit_message or "Upload TokenRelay selector",
            )


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _quiet_transformers():
    """Loading only the first layers of an encoder leaves weights unused on purpose: no warning."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _model_key(name: str) -> str:
    """Compare model identities by their last path component, case-insensitively."""
    return Path(str(name).rstrip("/")).name.lower()


def _resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"selector checkpoint {str(path)!r} is a file; expected a folder")
        return path
    text = str(name_or_path)
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text:
        raise FileNotFoundError(f"selector checkpoint folder {text!r} does not exist")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(text, repo_type="model"))
    except Exception as err:  # hub errors come in many types; all mean "not available"
        raise FileNotFoundError(
            f"selector checkpoint {text!r} is not a local folder and the hub could not provide it ({err})"
        ) from err


def _check_tensors(state: dict, expected: dict, path: Path) -> None:
    """Strict loading with errors that name the tensor."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        raise CheckpointError(f"{path}: missing tensor(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        raise CheckpointError(
            f"{path}: unexpected tensor(s) {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''} "
            "(saved from a different selector architecture?)"
        )
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{path}: tensor {key!r} has shape {tuple(state[key].shape)} but the selector built from "
                f"{CONFIG_FILE} expects {tuple(value.shape)}"
            )


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def model_card(config: ScorerConfig, card: dict) -> str:
    """The README.md of a release folder: model pair, data, labeler, metrics, usage."""
    pair_small = card.get("small_model") or config.small_model or "unknown"
    large = card.get("labeler_model") or "unknown"
    backbone = (
        f"`hidden`: layer {config.hidden_layer} hidden states of the small model (width {config.hidden_size}), "
        f"{config.pooling}-pooled per unit, + self-information, position and lexical features"
        if config.backbone == "hidden"
        else f"`encoder`: {config.encoder} with LoRA (r={config.lora_r}) on {', '.join(config.lora_targets)}, "
        f"token vectors {config.pooling}-pooled per unit"
    )
    lines = [
        "---",
        "library_name: tokenrelay",
        "tags: [tokenrelay, reasoning-selector, token-selection]",
        "---",
        "",
        "# TokenRelay selector",
        "",
        "Scores the units of a small model's reasoning so that a large model can answer from the few that",
        "most raise its likelihood of the right answer (higher score = keep first).",
        "",
        "| | |",
        "| --- | --- |",
        f"| small model (reasoner) | `{pair_small}` |",
        f"| large model (labeler) | `{large}` |",
        f"| units | {config.granularity} |",
        f"| backbone | {backbone} |",
        f"| head | {config.head} ({config.head_layers} layers, width {config.d_model}) |",
        f"| training data | `{card.get('data', 'unknown')}` |",
        f"| labels | {card.get('label_method', 'unknown')} |",
        f"| traces (train / val) | {card.get('n_train', '?')} / {card.get('n_val', '?')} |",
        f"| traces skipped (no ranking signal) | {card.get('skipped', '?')} |",
        f"| loss | {card.get('loss', 'unknown')} |",
        f"| steps | {card.get('steps', '?')} |",
        "",
    ]
    metrics = card.get("metrics") or {}
    if metrics:
        lines += ["## Validation metrics", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in sorted(metrics.items())]
        lines += [
            "",
            "Gain figures are estimated from the labels (linear surrogate f(S) ≈ f(∅) + Σ labels of S).",
            "",
        ]
    evaluation = card.get("evaluation") or {}
    if evaluation:
        lines += ["## Evaluation", ""]
        if card.get("evaluation_data"):
            lines += [f"On `{card['evaluation_data']}` (never used in training).", ""]
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in evaluation.items()]
        lines += [""]
        if card.get("evaluation_command"):
            lines += ["```bash", card["evaluation_command"], "```", ""]
    if card.get("command"):
        lines += ["## Trained with", "", "```bash", card["command"], "```", ""]
    if card.get("notes"):
        lines += [str(card["notes"]), ""]
    lines += [
        "## Use",
        "",
        "```python",
        "from selector.scorer import TokenSelector",
        "selector = TokenSelector.from_pretrained('PATH_OR_HUB_ID')",
        "selector.check_compatible(small_agent)  # the hidden backbone is tied to its small model",
        "scores = selector(view)  # one score per unit of a selector.reasoning.ReasoningView",
        "```",
        "",
    ]
    if config.backbone == "hidden":
        lines += [
            f"Reason with `tokenrelay reason --hidden-layer {config.hidden_layer}` so traces carry the hidden",
            "states this selector reads.",
            "",
        ]
    return "\n".join(lines)
