"""Latency profiler on simulated data: random-weight models built from configs, a fitted cost model.

The paper's latency analysis needs no trained weights: the time a transformer takes depends on its
shapes, not its values. So a model is built from a config (given sizes, or a real model's
config.json) with random weights, timed at several prompt lengths and decode lengths, and a
linear cost model is fitted per model:

    prefill(n tokens) = fixed + prefill_per_token * n
    decode(m tokens)  = decode_per_token * m
    vision            = vision_per_image * images   (vision-language models)

From two cost models (small, large) the relay's latency is predicted against the large model
reasoning on its own, for given prompt, reasoning and answer lengths, before downloading weights.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..io import write_json_atomic

__all__ = [
    "CostModel",
    "ModelSpec",
    "ProfileConfig",
    "build_random_model",
    "predict_large_reasoning",
    "predict_relay",
    "profile_model",
]


@dataclass
class ModelSpec:
    """A model to profile: a config source, or sizes for a Llama-style decoder."""

    name: str
    """Label in tables and plots."""
    config: str | None = None
    """Folder or config.json of a real model (its shapes are used, never its weights)."""
    hidden_size: int = 896
    """Width (when no config is given)."""
    num_layers: int = 24
    """Decoder layers (when no config is given)."""
    num_heads: int = 14
    """Attention heads (when no config is given)."""
    num_kv_heads: int = 2
    """Key/value heads (grouped-query attention)."""
    intermediate_size: int = 4864
    """MLP width (when no config is given)."""
    vocab_size: int = 32000
    """Vocabulary size (when no config is given)."""

    def __post_init__(self) -> None:
        if self.config is None and self.hidden_size % self.num_heads:
            raise ValueError(f"{self.name}: hidden_size {self.hidden_size} is not divisible by num_heads")

    def check_config_exists(self) -> None:
        """Checked when a run starts (not when the YAML is read, so configs load anywhere)."""
        if self.config is not None and not Path(self.config).exists():
            raise FileNotFoundError(f"{self.name}: config {self.config!r} does not exist")


@dataclass
class CostModel:
    """Fitted per-model latency, seconds."""

    name: str
    fixed_s: float
    prefill_per_token_s: float
    decode_per_token_s: float
    vision_per_image_s: float = 0.0
    r2_prefill: float = 1.0
    device: str = "cpu"
    dtype: str = "float32"

    def prefill(self, tokens: int, images: int = 0) -> float:
        return self.fixed_s + self.prefill_per_token_s * tokens + self.vision_per_image_s * images

    def decode(self, tokens: int) -> float:
        return self.decode_per_token_s * tokens

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> CostModel:
        return cls(**json.loads(Path(path).read_text()))


@dataclass
class ProfileConfig:
    """How to time each model."""

    prompt_lengths: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    """Prompt lengths timed for the prefill fit."""
    decode_tokens: int = 16
    """Decode steps timed per measurement."""
    repeats: int = 3
    """Timed repeats per point (medians are used)."""
    dtype: str = "float32"
    """float32 or bfloat16."""
    device: str = "cpu"
    """Where to time."""

    def __post_init__(self) -> None:
        if len(self.prompt_lengths) < 2 or min(self.prompt_lengths) < 1:
            raise ValueError("need at least two positive prompt lengths to fit a prefill slope")
        if self.decode_tokens < 2 or self.repeats < 1:
            raise ValueError("decode_tokens must be >= 2 and repeats >= 1")


def build_random_model(spec: ModelSpec, dtype: torch.dtype = torch.float32):
    """A causal LM (or the text part of a vision-language model) with random weights."""
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

    spec.check_config_exists()
    if spec.config is not None:
        path = Path(spec.config)
        config = AutoConfig.from_pretrained(path.parent if path.is_file() else path)
        config = getattr(config, "text_config", None) or config
    else:
        config = LlamaConfig(
            hidden_size=spec.hidden_size,
            num_hidden_layers=spec.num_layers,
            num_attention_heads=spec.num_heads,
            num_key_value_heads=spec.num_kv_heads,
            intermediate_size=spec.intermediate_size,
            vocab_size=spec.vocab_size,
        )
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _fit_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares intercept, slope and R²."""
    n, mx, my = len(xs), statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    intercept = my - slope * mx
    ss_res = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys) or 1e-12
    return intercept, slope, 1 - ss_res / ss_tot if n > 2 else 1.0


@torch.inference_mode()
def profile_model(spec: ModelSpec, config: ProfileConfig | None = None) -> tuple[CostModel, list[dict]]:
    """Time a random-weight model and fit its cost model; returns it with the raw points."""
    config = config or ProfileConfig()
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[config.dtype]
    model = build_random_model(spec, dtype).to(config.device)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    points = []
    model(input_ids=torch.randint(0, vocab, (1, 8), generator=gen).to(config.device))  # warm-up
    for n in config.prompt_lengths:
        ids = torch.randint(0, vocab, (1, n), generator=gen).to(config.device)
        seconds = _median_time(lambda ids=ids: model(input_ids=ids, logits_to_keep=1), config.repeats)
        points.append({"kind": "prefill", "tokens": n, "seconds": seconds})
    ids = torch.randint(0, vocab, (1, config.prompt_lengths[0]), generator=gen).to(config.device)

    def decode() -> None:
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        cache, token = out.cache, out.logits[:, -1:].argmax(-1)
        start = time.perf_counter()
        for _ in range(config.decode_tokens):
            out = model(input_ids=token, cache=cache, use_cache=True)
            cache, token = out.cache, out.logits[:, -1:].argmax(-1)
        decode.elapsed = time.perf_counter() - start

    per_token = []
    for _ in range(config.repeats):
        decode()
        per_token.append(decode.elapsed / config.decode_tokens)
    points.append(
        {
            "kind": "decode",
            "tokens": config.decode_tokens,
            "seconds": statistics.median(per_token) * config.decode_tokens,
        }
    )
    fixed, slope, r2 = _fit_line(
        [p["tokens"] for p in points if p["kind"] == "prefill"],
        [p["seconds"] for p in points if p["kind"] == "prefill"],
    )
    cost = CostModel(
        name=spec.name,
        fixed_s=max(fixed, 0.0),
        prefill_per_token_s=max(slope, 0.0),  # timing noise on tiny models can tilt it below 0
        decode_per_token_s=statistics.median(per_token),
        r2_prefill=r2,
        device=config.device,
        dtype=config.dtype,
    )
    return cost, points


def predict_large_reasoning(
    large: CostModel, prompt_tokens: int, reasoning_tokens: int, answer_tokens: int
) -> float:
    """The large model reasons on its own: one prefill, then its reasoning and answer decoded."""
    return large.prefill(prompt_tokens) + large.decode(reasoning_tokens + answer_tokens)


def predict_relay(
    small: CostModel,
    large: CostModel,
    *,
    prompt_tokens: int,
    reasoning_tokens: int,
    answer_tokens: int,
    budget: float = 0.25,
    transfer_rate: float = 1.0,
    parallel: bool = False,
) -> dict[str, float]:
    """Predicted relay latency by stage.

    ``transfer_rate`` is the share of questions the gate sends through the small model (1.0 for
    gate 'always'); the large model's direct answer always runs. With ``parallel`` the small
    model reasons while the large model answers directly (end to end takes the longer of the two).
    """
    direct = large.prefill(prompt_tokens) + large.decode(answer_tokens)
    reasoning = small.prefill(prompt_tokens) + small.decode(reasoning_tokens)
    transfer = large.prefill(prompt_tokens + round(budget * reasoning_tokens)) + large.decode(answer_tokens)
    relayed = (max(direct, reasoning) if parallel else direct + reasoning) + transfer
    total = (1 - transfer_rate) * direct + transfer_rate * relayed
    return {
        "large_direct_s": direct,
        "small_reasoning_s": reasoning,
        "large_transfer_s": transfer,
        "end_to_end_s": total,
    }
