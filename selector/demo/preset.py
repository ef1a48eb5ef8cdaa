"""`tokenrelay demo`: the relay, offline, on the embedded synthetic world — a preset of `tokenrelay eval`.

The demo's two agents and its selector ship in ``checkpoints/demo/`` (installed with the package;
tiny models trained on ``selector.demo.synthetic`` questions by ``scripts/build_demo.py``). The demo
writes its held-out questions to ``OUT/questions.jsonl`` and runs the evaluation engine
(``selector.evaluation.run_eval``) on them: the large model's direct answer, its own step-by-step
reasoning, the small model's own reasoning, and the relay with the trained selector and with each
heuristic at the same budget, always and behind a gate. Gating, selection, stage accounting,
tables and plots are the engine's; this module only builds its config and prints a short table.
The engine caches every model output in ``OUT/cache`` with its measured stage times, so a rerun
into the same folder reports the same numbers (``--fresh true`` measures again).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..baselines import BASELINES
from ..gating import check_gate

__all__ = [
    "DEMO_SEED",
    "DemoConfig",
    "default_checkpoints",
    "demo_eval_config",
    "run_demo",
    "short_table",
    "summary",
]

DEMO_SEED = 7
"""Seed of the demo's held-out questions (the agents and the selector never trained on them)."""
GATE_FILE = "gate.json"
"""In the checkpoints folder: the confidence gate's calibrated tau and how it was chosen."""
BUILD_HINT = "rebuild them with `python -m scripts.build_demo`"
HEURISTICS = ("random", "first", "last", "selfinfo")


def default_checkpoints() -> Path:
    """``checkpoints/demo`` as installed with the package (a wheel), else the source tree's top-level one."""
    package = Path(__file__).resolve().parents[1]  # selector/
    installed = package / "checkpoints" / "demo"
    return installed if installed.is_dir() else package.parent / "checkpoints" / "demo"


@dataclass
class DemoConfig:
    """`tokenrelay demo`: the evaluation engine's preset for the shipped tiny agents and held-out questions."""

    questions: int = 100
    """Held-out demo questions to run."""
    out: str = "runs/demo"
    """Output folder: the engine's results.md/.csv/.json, records.jsonl, plots and cache/, plus questions.jsonl."""
    checkpoints: str | None = None
    """Folder holding small/, large/ and selector/ (None: the demo checkpoints installed with the package)."""
    budgets: list[float] = field(default_factory=lambda: [0.15])
    """Ratios of reasoning tokens (large-model tokens) for the trained selector and the heuristics."""
    baselines: list[str] = field(default_factory=lambda: list(HEURISTICS))
    """Heuristic selectors beside the trained one (random, first, last, selfinfo; oracle costs one
    large-model scoring per reasoning unit)."""
    gate: str = "confidence"
    """Gate of the gated relay: confidence (skips the small model when the large one is sure) or agreement."""
    tau: float | None = None
    """The confidence gate's threshold on the large model's direct-answer probability (None: the tau
    calibrated for the checkpoints, their ``gate.json``, written by ``scripts/build_demo.py``)."""
    question_seed: int = DEMO_SEED
    """Seed of the questions: the held-out set by default (the build calibrates the gate on another)."""
    batch_size: int = 100
    """Questions per batch (stage times are a batch's wall time divided by its size)."""
    reason_tokens: int = 320
    """Cap on the small model's and on the large model's own reasoning tokens."""
    answer_tokens: int = 4
    """Cap on the large model's answer tokens."""
    seed: int = 0
    """Seed of the random selector."""
    threads: int | None = 1
    """torch CPU threads (None: torch's default). Tiny models run fastest on one: more threads only
    wait on each other, and on a busy machine they are many times slower."""
    fresh: bool = False
    """Delete OUT/cache first, so every model output is computed (and timed) again."""
    full_table: bool = False
    """Print every row of the engine's table (else the short demo table; results.md has every row)."""
    plot: bool = True
    """Write the plots (accuracy vs latency with the Pareto front; accuracy vs transferred tokens)."""

    def __post_init__(self) -> None:
        if self.questions < 1:
            raise ValueError(f"questions must be >= 1, got {self.questions}")
        if not self.budgets:
            raise ValueError("give at least one budget")
        for b in self.budgets:
            if not 0 < b <= 1:
                raise ValueError(f"budgets are ratios in (0, 1], got {b}")
        unknown = [b for b in self.baselines if b not in BASELINES or b in ("none", "full")]
        if unknown:
            allowed = [b for b in BASELINES if b not in ("none", "full")]
            raise ValueError(f"unknown baseline(s) {unknown}; choose from {allowed}")
        if self.gate not in ("confidence", "agreement"):
            raise ValueError(f"gate must be confidence or agreement, got {self.gate!r}")
        if self.tau is not None:
            check_gate(self.gate, self.tau)
        for name in ("batch_size", "reason_tokens", "answer_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


def checkpoint_root(config: DemoConfig) -> Path:
    """The folder with small/, large/ and selector/, checked (one clear error when any is missing)."""
    root = Path(config.checkpoints) if config.checkpoints else default_checkpoints()
    missing = [name for name in ("small", "large", "selector") if not (root / name / "config.json").is_file()]
    if missing:
        raise FileNotFoundError(
            f"the demo checkpoints {', '.join(missing)} are missing under {root}: {BUILD_HINT}"
        )
    return root


def shipped_tau(root: Path) -> float:
    """The confidence gate's tau calibrated for the checkpoints in ``root`` (``gate.json``)."""
    path = root / GATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (the calibrated gate): {BUILD_HINT}, or give --tau")
    tau = json.loads(path.read_text())["tau"]
    check_gate("confidence", tau)
    return tau


def demo_eval_config(config: DemoConfig, root: Path, data: Path):
    """The evaluation engine's config this preset stands for."""
    from ..evaluation import EvalConfig
    from ..relay import RelayConfig

    relay = RelayConfig(
        small=str(root / "small"),
        large=str(root / "large"),
        tau=config.tau if config.tau is not None else shipped_tau(root),
        reason_tokens=config.reason_tokens,
        answer_tokens=config.answer_tokens,
        batch_size=config.batch_size,
        dtype="float32",
        device="cpu",
        seed=config.seed,
    )
    return EvalConfig(
        data=str(data),
        relay=relay,
        out=config.out,
        selectors=[str(root / "selector"), "full", *config.baselines],
        budgets=list(config.budgets),
        gates=["always", config.gate],
        conditions=["large_direct", "large_reasoning", "small_reasoning", "relay"],
        large_reason_tokens=config.reason_tokens,
        plot=config.plot,
    )


def run_demo(config: DemoConfig, progress: bool = True) -> dict:
    """Write the held-out questions, run the engine on them, and return its result (written to ``out``)."""
    import torch

    from ..evaluation import run_eval
    from .synthetic import DEMO_WORLD, write_synthetic_jsonl

    if config.threads:
        torch.set_num_threads(config.threads)
    root = checkpoint_root(config)
    out = Path(config.out)
    if config.fresh and (out / "cache").exists():
        shutil.rmtree(out / "cache")
    out.mkdir(parents=True, exist_ok=True)
    data = out / "questions.jsonl"
    write_synthetic_jsonl(data, config.questions, seed=config.question_seed, config=DEMO_WORLD)
    result = run_eval(demo_eval_config(config, root, data), progress=progress)
    result["checkpoints"] = str(root)
    return result


# --------------------------------------------------------------------------- what the demo prints


def _is_short_row(row: dict) -> bool:
    """The demo table: the model baselines, the relay always (every selector), gated with the trained one."""
    return row["kind"] != "relay" or row["gate"] == "always" or row["selector"] == "selector"


def short_table(result: dict) -> str:
    """The engine's Markdown table, restricted to the demo's rows."""
    from ..evaluation.report import markdown_table

    return markdown_table({**result, "rows": [r for r in result["rows"] if _is_short_row(r)]})


def summary(result: dict) -> list[str]:
    """The demo's point in a few lines: the relay against the large model's own reasoning and the small one."""
    rows = {r["condition"]: r for r in result["rows"]}
    own, small = rows.get("large_reasoning"), rows.get("small_reasoning")
    relays = [r for r in result["rows"] if r["kind"] == "relay" and r["selector"] == "selector"]
    if not own or not small or not relays or not own["accuracy"]:
        return []
    lines = [
        f"large model's own reasoning: {own['accuracy']:.1%} in {own['end_to_end']:.2f} s; "
        f"small model's own: {small['accuracy']:.1%} in {small['end_to_end']:.2f} s "
        f"(latency: a batch's wall time, counted for each of its questions)"
    ]
    for r in relays:
        lines.append(
            f"{r['title']}: {r['accuracy']:.1%} = {r['accuracy'] / own['accuracy']:.0%} of the large model's "
            f"own accuracy at 1/{own['end_to_end'] / max(r['end_to_end'], 1e-12):.1f} of its latency, "
            f"{100 * (r['accuracy'] - small['accuracy']):+.1f} points over the small model alone"
        )
    return lines


def demo_config(path: str) -> DemoConfig:
    from ..cmdline import parse_config

    return parse_config(DemoConfig, ["--config", str(path)], "tokenrelay demo")


def main(argv: Sequence[str]) -> int:
    import time

    from ..cmdline import parse_config, run_command

    prog = "tokenrelay demo"

    def body() -> None:
        started = time.perf_counter()
        config = parse_config(DemoConfig, argv, prog)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        result = run_demo(config)
        print(markdown_table_for(config, result))
        print()
        for line in summary(result):
            print(line)
        outputs = result.get("outputs", {})
        plot = outputs.get("plot_latency")
        print(
            f"\n{result['questions']} held-out questions in {time.perf_counter() - started:.0f} s "
            f"(cache: {result['cache']}); every row in {outputs.get('markdown')}"
            + (f"; accuracy vs latency with the Pareto front: {plot}" if plot else "")
        )

    return run_command(body, prog)


def markdown_table_for(config: DemoConfig, result: dict) -> str:
    from ..evaluation.report import markdown_table

    return markdown_table(result) if config.full_table else short_table(result)
