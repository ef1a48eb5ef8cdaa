"""``TokenSelector``: a trained unit scorer's inputs (featurize, collate), scores and compatibility checks;
its release format is ``selector.scorer.checkpoint``."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..baselines import SelfInfoScorer
from ..features import SCALAR_FEATURES, token_units, unit_hidden, unit_scalars
from ..reasoning import ReasoningView
from ..units import assign_spans_to_units
from .checkpoint import SelectorCheckpoint
from .config import SELFINFO_FALLBACKS, IncompatibleSelectorError, ScorerConfig, resolve_encoder
from .network import UnitScorerNet

__all__ = ["TokenSelector"]


class TokenSelector(SelectorCheckpoint):
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
        self.last_fell_back = False
        """Whether the novelty fallback handled the last ``__call__``'s view (``ScorerConfig.novelty_fallback``)."""

    @property
    def min_score(self) -> float | None:
        """The score floor ``selector.selection.select_units`` applies (``ScorerConfig.min_score``); none
        after a view the ``selfinfo`` fallback scored (self-information is not a predicted gain)."""
        if self.last_fell_back and self.config.novelty_fallback in SELFINFO_FALLBACKS:
            return None
        return self.config.min_score

    # ------------------------------------------------------------------ encoder
    def _load_encoder_tokenizer(self) -> None:
        from transformers import AutoConfig, AutoTokenizer

        cfg = self.config
        try:
            self.encoder_tokenizer = AutoTokenizer.from_pretrained(resolve_encoder(cfg.encoder))
            enc_config = AutoConfig.from_pretrained(resolve_encoder(cfg.encoder))
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
            base = AutoModel.from_pretrained(resolve_encoder(config.encoder), **kwargs)
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

    def score_views(
        self, views: Sequence[ReasoningView], batch_size: int = 16, fallback: list[bool] | None = None
    ) -> list[list[float]]:
        """One score list per view (batched); views without units get []. A ``fallback`` list is
        filled with whether each view was scored by the novelty fallback (ScorerConfig.novelty_fallback)."""
        out: list[list[float]] = [[] for _ in views]
        fell_back = [False] * len(views)
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
                    novel = self.net.last_fallback
                    for row, (k, it) in enumerate(zip(chunk, items)):
                        out[k] = scores[row, : it["n_units"]].tolist()
                        fell_back[k] = bool(novel[row]) if novel is not None else False
                        if fell_back[k] and self.config.novelty_fallback in SELFINFO_FALLBACKS:
                            out[k] = SelfInfoScorer()(views[k])
        finally:
            if was_training:
                self.net.train()
        if fallback is not None:
            fallback[:] = fell_back
        return out

    def __call__(self, view: ReasoningView) -> list[float]:
        flags: list[bool] = []
        scores = self.score_views([view], fallback=flags)[0]
        self.last_fell_back = flags[0]
        return scores

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
