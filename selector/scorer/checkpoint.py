"""The selector's release folder: ``config.json`` + ``model.safetensors`` (+ peft adapter files) +
a ``README.md`` model card (a hub ``ModelCard``); strict loading from a folder or hub id, and upload to
a hub, through huggingface_hub's ``ModelHubMixin``."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from huggingface_hub import ModelCard, ModelHubMixin

from ..io import write_json_atomic
from .config import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_WEIGHTS_FILE,
    CARD_FILE,
    CHECKPOINT_FORMAT,
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    ScorerConfig,
)

if TYPE_CHECKING:
    from .model import TokenSelector

__all__ = ["SelectorCheckpoint", "model_card"]


class SelectorCheckpoint(
    ModelHubMixin,
    library_name="tokenrelay",
    tags=["tokenrelay", "reasoning-selector", "token-selection"],
):
    """Base of ``TokenSelector``: its release folder through huggingface_hub's ``ModelHubMixin``
    (``save_pretrained``, ``from_pretrained`` from a folder or hub id, ``push_to_hub``), with the
    strict checks of a TokenRelay checkpoint: the format tag, every tensor present and no other,
    equal shapes, LoRA settings that match. The model card is a ``ModelCard`` (``generate_model_card``).
    Needs ``config``, ``card`` and ``net`` from the selector."""

    def save_pretrained(
        self, save_directory: str | os.PathLike, card: dict | None = None, **hub_kwargs
    ) -> Path:
        """Write the release folder: config.json, model.safetensors (+ adapter files), README.md.

        ``card`` adds entries to the model card; ``hub_kwargs`` go to ``ModelHubMixin.save_pretrained``
        (``push_to_hub=True, repo_id=...`` also uploads it). Returns the folder."""
        if card:
            self.card.update(card)
        super().save_pretrained(save_directory, **hub_kwargs)
        return Path(save_directory)

    def _save_pretrained(self, save_directory: Path) -> None:
        from safetensors.torch import save_file

        out = Path(save_directory)
        head = {
            k: v.detach().cpu().contiguous()
            for k, v in self.net.state_dict().items()
            if not k.startswith("encoder.")
        }
        if self.config.backbone == "encoder":
            self.net.encoder.save_pretrained(str(out), safe_serialization=True)
        save_file(head, str(out / WEIGHTS_FILE), metadata={"format": CHECKPOINT_FORMAT})
        config = {"format": CHECKPOINT_FORMAT, "scorer": asdict(self.config), "card": self.card}
        write_json_atomic(out / CONFIG_FILE, config)
        self.generate_model_card().save(out / CARD_FILE)  # replaces peft's stub card

    def generate_model_card(self, *args, **kwargs) -> ModelCard:
        """The README.md of a release folder (``model_card``) as a hub ``ModelCard``."""
        return ModelCard(model_card(self.config, self.card))

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        device: str = "cpu",
        encoder: str | None = None,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
    ) -> TokenSelector:
        """Load a release folder or hub id strictly (every tensor present, no extra, shapes equal).

        ``encoder`` overrides where the base encoder is found (if it moved since training). A hub id
        is downloaded whole first (``snapshot_download``), so a missing repository or an offline
        machine is one clear ``FileNotFoundError``.
        """
        folder = _resolve_checkpoint(
            pretrained_model_name_or_path,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
        )
        if not (folder / CONFIG_FILE).is_file():  # before the mixin, which only warns
            raise CheckpointError(f"selector checkpoint {str(folder)!r} is missing {CONFIG_FILE}")
        return super().from_pretrained(folder, device=device, encoder=encoder)

    @classmethod
    def _from_pretrained(
        cls, *, model_id: str, device: str = "cpu", encoder: str | None = None, **unused
    ) -> TokenSelector:
        """The mixin's hook: ``model_id`` is the local folder ``from_pretrained`` resolved. The config
        the mixin read is not trusted as is: ``config.json`` is parsed and checked here."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(model_id)
        config_path = folder / CONFIG_FILE
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
        if not config.unit_vectors:
            # scalar-only checkpoints saved before the novelty fallback kept these layers, unused
            head = {k: v for k, v in head.items() if k.split(".")[0] not in _VECTOR_LAYERS}
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

    def push_to_hub(self, repo_id: str, *, commit_message: str | None = None, **hub_kwargs):
        """Upload the release folder to a model hub repository (created if needed); ``hub_kwargs``
        (``private``, ``token``, ``branch``, ``create_pr``...) go to ``ModelHubMixin.push_to_hub``."""
        return super().push_to_hub(
            repo_id, commit_message=commit_message or "Upload TokenRelay selector", **hub_kwargs
        )


def _resolve_checkpoint(name_or_path: str | os.PathLike, **hub_kwargs) -> Path:
    """A local folder as is; a hub id downloaded whole (``snapshot_download``); else a clear error."""
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
        return Path(snapshot_download(text, repo_type="model", **hub_kwargs))
    except Exception as err:  # hub errors come in many types; all mean "not available"
        raise FileNotFoundError(
            f"selector checkpoint {text!r} is not a local folder and the hub could not provide it ({err})"
        ) from err


_VECTOR_LAYERS = ("unit_norm", "unit_proj", "magnitude_proj")
"""The layers that read unit vectors, which a scalar-only net (``unit_vectors: false``) lacks."""


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


_FALLBACK_WORDS = {
    "nothing": "send nothing",
    "selfinfo": "keep their most surprising units (the selfinfo selector)",
    "disagreement": "keep their most surprising units when the small model's answer differs from the large "
    "model's direct answer, else send nothing",
    "scalars": "are scored from the scalar features alone",
}


def _novelty_line(info: dict | None) -> str:
    if not info:
        return "not fitted: nothing falls back"
    return (
        f"fitted on {info.get('traces_fitted', '?')} training traces, {info.get('components', '?')} "
        f"components; threshold {_fmt(info.get('threshold'))} on {info.get('traces_calibrated', '?')} "
        f"{info.get('calibrated_on', 'traces')}"
    )


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
        *(
            [
                f"| score floor | {config.min_score:g}: units scoring below it are never sent (predicted nats) |"
            ]
            if config.min_score is not None
            else []
        ),
        *(
            [
                f"| novelty fallback | traces whose unit vectors lie beyond the {config.novelty_quantile:g} quantile "
                "of the validation traces' distance to the training traces "
                + _FALLBACK_WORDS.get(config.novelty_fallback, "")
                + f" ({_novelty_line(card.get('novelty_fallback'))}) |"
            ]
            if config.novelty_fallback
            else []
        ),
        f"| steps | {card.get('steps', '?')} |",
        *([f"| released weights | {card['released_weights']} |"] if card.get("released_weights") else []),
        *(
            [f"| fallback head's weights | {card['released_fallback_weights']} |"]
            if card.get("released_fallback_weights")
            else []
        ),
        *([f"| derived from | {card['derived_from']} |"] if card.get("derived_from") else []),
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
