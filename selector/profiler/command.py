"""`tokenrelay profile`: fit cost models on random-weight models, predict the relay's speedup, plot it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..io import write_json_atomic
from .cost import ModelSpec, ProfileConfig, predict_large_reasoning, predict_relay, profile_model

__all__ = ["ProfileCommand", "main", "profile_config", "run_profile"]


@dataclass
class ProfileCommand:
    """`tokenrelay profile`: fit cost models on random-weight models and predict relay latency."""

    small: ModelSpec
    """The small model's shapes (``config: path/to/model`` or sizes)."""
    large: ModelSpec
    """The large model's shapes."""
    out: str = "runs/profile"
    """Output folder: cost models, prediction table (JSON, Markdown) and plot."""
    prompt_tokens: int = 128
    """Question prompt length used in the prediction."""
    reasoning_tokens: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024])
    """Reasoning lengths to predict for (the large model reasoning alone writes as many)."""
    answer_tokens: int = 8
    """Length of a brief answer."""
    budget: float = 0.25
    """Share of the reasoning tokens transferred."""
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    """How to time the models."""

    def __post_init__(self) -> None:
        if not 0 < self.budget <= 1:
            raise ValueError(f"budget must be in (0, 1], got {self.budget}")
        if self.prompt_tokens < 1 or self.answer_tokens < 1 or not self.reasoning_tokens:
            raise ValueError("prompt_tokens and answer_tokens must be >= 1 and reasoning_tokens non-empty")


def run_profile(command: ProfileCommand) -> list[dict]:
    """Profile both models, write cost models, the prediction table and a plot; return the table."""
    for spec in (command.small, command.large):
        spec.check_config_exists()  # both, before minutes of timing the first
    out = Path(command.out)
    out.mkdir(parents=True, exist_ok=True)
    costs, raw = {}, {}
    for role, spec in (("small", command.small), ("large", command.large)):
        costs[role], raw[role] = profile_model(spec, command.profile)
        costs[role].save(out / f"cost_{role}.json")
    rows = []
    for r in command.reasoning_tokens:
        kw = {
            "prompt_tokens": command.prompt_tokens,
            "reasoning_tokens": r,
            "answer_tokens": command.answer_tokens,
        }
        large = predict_large_reasoning(costs["large"], **kw)
        relay = predict_relay(costs["small"], costs["large"], budget=command.budget, **kw)
        parallel = predict_relay(costs["small"], costs["large"], budget=command.budget, parallel=True, **kw)
        rows.append({
            "reasoning_tokens": r, "large_reasoning_s": large, "relay_s": relay["end_to_end_s"],
            "relay_parallel_s": parallel["end_to_end_s"], "speedup": large / relay["end_to_end_s"],
        })  # fmt: skip
    write_json_atomic(
        out / "prediction.json", {"costs": {k: asdict(v) for k, v in costs.items()}, "raw": raw, "rows": rows}
    )
    head = "| reasoning tokens | large reasons (s) | relay (s) | relay, parallel (s) | speedup |\n|---|---|---|---|---|\n"
    body = "".join(
        f"| {r['reasoning_tokens']} | {r['large_reasoning_s']:.3f} | {r['relay_s']:.3f} | {r['relay_parallel_s']:.3f} | {r['speedup']:.2f}x |\n"
        for r in rows
    )
    (out / "prediction.md").write_text(head + body)
    _plot(rows, out / "prediction.png", command)
    return rows


def _plot(rows: list[dict], path: Path, command: ProfileCommand) -> None:
    from ..evaluation.plots import save_figure, subplots

    xs = [r["reasoning_tokens"] for r in rows]
    fig, ax = subplots(figsize=(6, 4))
    ax.plot(xs, [r["large_reasoning_s"] for r in rows], "o-", label=f"{command.large.name} reasons alone")
    ax.plot(xs, [r["relay_s"] for r in rows], "s-", label=f"relay ({command.budget:.0%} transferred)")
    ax.plot(xs, [r["relay_parallel_s"] for r in rows], "^--", label="relay, small reasons in parallel")
    ax.set_xlabel("reasoning tokens")
    ax.set_ylabel("predicted latency (s)")
    ax.legend()
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def profile_config(path: str) -> ProfileCommand:
    from ..cmdline import parse_config

    return parse_config(ProfileCommand, ["--config", str(path)], "tokenrelay profile")


def main(argv: Sequence[str]) -> int:
    from ..cmdline import parse_config, run_command

    prog = "tokenrelay profile"

    def body() -> None:
        command = parse_config(ProfileCommand, argv, prog)
        rows = run_profile(command)
        print((Path(command.out) / "prediction.md").read_text())
        print(f"{len(rows)} predictions; cost models, table and plot in {command.out}")

    return run_command(body, prog)
