"""What an agent is configured with and what it returns: its config, generations, scores, and the
checks of requests shared by local agents (``selector.agents``) and remote ones (``selector.remote``)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["DTYPES", "AgentConfig", "Generation", "ScoreResult", "TokenTimer"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class AgentConfig:
    """How to load one model."""

    path: str
    """Local folder or hub id of a causal LM or image-text-to-text model."""
    dtype: str = "float32"
    """Weights dtype: float32, bfloat16, float16 or auto (the checkpoint's own)."""
    device: str = "auto"
    """cpu, cuda, cuda:N, mps, or auto (cuda when available)."""
    device_map: str | None = None
    """Passed to from_pretrained to spread a model too big for one device (e.g. "auto"); overrides device."""
    chat_template: bool | None = None
    """Use the tokenizer's chat template: None = when it has one."""
    system_prompt: str | None = None
    """Optional system message put before every prompt."""
    trust_remote_code: bool = False
    """Allow model code from the checkpoint (off: never run downloaded code by default)."""

    def __post_init__(self) -> None:
        if not str(self.path).strip():
            raise ValueError("AgentConfig.path is empty: give a local model folder or a hub id")
        if self.dtype == "fastest":
            raise ValueError(
                "dtype 'fastest' depends on the model's job: set it in a relay config (RelayConfig.resolve_dtypes "
                "measures it) or call selector.dtype_choice.fastest_dtype(path, 'answer' | 'reason')"
            )
        if self.dtype not in (*DTYPES, "auto"):
            raise ValueError(f"dtype must be one of {[*DTYPES, 'auto']}, got {self.dtype!r}")


@dataclass
class Generation:
    """One generated continuation."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    """Log-probability of each generated token under the model's own (untempered) distribution."""
    finish_reason: str
    """'stop' (end-of-sequence token) or 'length' (hit max_new_tokens); a stream (selector.early_stop)
    also ends 'early_stop' (its check said enough) or 'cancelled'."""
    prompt_tokens: int
    new_tokens: int
    prefill_s: float
    """Wall time of the batch's prefill and first token (shared by the batch's items)."""
    decode_s: float
    """Wall time of the batch's remaining decode steps (shared by the batch's items), and of the forward
    that computes ``hidden_states`` when they are asked for."""
    hidden_states: torch.Tensor | None = None
    """(new_tokens, hidden) at the requested layer, when asked for."""
    hidden_s: float = 0.0
    """Of ``decode_s``, the seconds of the forward that computed ``hidden_states`` (0 when none ran): a
    reading of the reasoning for itself (the small model's own answer) does not pay for it."""
    cached_tokens: int = 0
    """Prompt tokens taken from a ``PromptCache`` instead of prefilled (``prefill_s`` ran the rest)."""
    prompt_cache: Any = None
    """This prompt's ``PromptCache`` with its KV, when the call asked to keep it (batch 1, text only)."""


@dataclass
class ScoreResult:
    """Log-probability of a target string given a prompt."""

    logprob: float
    token_logprobs: list[float] = field(default_factory=list)

    @property
    def target_tokens(self) -> int:
        return len(self.token_logprobs)


class TokenTimer:
    """Stopping criterion that never stops, only timestamps steps: the first call ends the prefill."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first: float | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        if self.first is None:
            self.first = time.perf_counter()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def _looks_local(path: str) -> bool:
    """A hub id is ``name`` or ``org/name``; anything else that does not exist is a missing folder."""
    return path.startswith((".", "/", "~")) or path.count("/") > 1 or "\\" in path


def _fast_on_this_cpu(dtype: torch.dtype) -> bool:
    """Whether this CPU has units for ``dtype`` (float32 always; bfloat16 with AVX512-BF16 or AMX,
    where its prefill measured ~2.5x float32's; float16 with AMX-FP16), as oneDNN reports them."""
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if dtype == torch.float16:
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    return True


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _image_lists(prompts: Sequence, images: Sequence[Sequence] | None) -> list:
    """One image list per prompt (none given: empty lists)."""
    images = list(images) if images is not None else [[] for _ in prompts]
    if len(images) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(images)} image lists")
    return images


def _score_requests(
    prompts: Sequence, targets: Sequence[str] | str, images: Sequence[Sequence] | None
) -> tuple[list[str], list]:
    """Targets (one string: the same for every prompt) and image lists, checked against the prompts."""
    targets = [targets] * len(prompts) if isinstance(targets, str) else list(targets)
    images = list(images) if images is not None else [[] for _ in prompts]
    if not len(prompts) == len(targets) == len(images):
        raise ValueError(f"{len(prompts)} prompts, {len(targets)} targets, {len(images)} image lists")
    if not all(targets):
        raise ValueError("cannot score an empty target string")
    return targets, images


def _load_image(image):
    """A PIL image from a path or a PIL image; a missing path is an error that names it."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        if not Path(image).exists():
            raise FileNotFoundError(f"image file {str(image)!r} does not exist")
        with Image.open(image) as im:
            return im.convert("RGB")
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    raise TypeError(f"an image must be a file path or a PIL image, got {type(image).__name__}")
