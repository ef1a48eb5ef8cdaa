"""Labeler ablation: ablation at m = 8/16/32/64, loo and gradient -- agreement with loo, and cost.

    python -m scripts.ablate_labelers --config configs/ablations/labelers.yaml [--model ...]

A config-driven entry over ``scripts.bench_labels`` (which does the work): on traces whose full
transfer raises the large model's gold log-prob by >= ``min_gain`` nats, every labeler labels
every trace at each unit granularity, and the table reports per labeler: Spearman with loo (the
reference), large-model forward passes and estimated wall seconds per trace (for an uncached run),
the gain recovered when the labeler's own top units are kept up to ``budget`` of the reasoning
tokens (random units at the same budget beside it), how often those kept units state the gold
answer (leakage), and the surrogate's held-out R^2.

Resumable: every f(S) is cached on disk and every (trace, granularity) result is saved as it
finishes; a rerun reuses both (a new m value costs only its new masks, the smaller m values
share the larger draws' masks). Writes labelers.{md,csv,json,png} to ``out``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from scripts import bench_labels
from scripts.ablation_common import check_settings, config_from_argv, main_for, write_outputs
from selector.agents import DTYPES
from selector.units import GRANULARITIES
from training.labelers import METHODS

PROG = "python -m scripts.ablate_labelers"
STEM = "labelers"


@dataclass
class LabelerAblationConfig:
    """Labeler ablation: which labeler agrees with leave-one-out, at what cost."""

    traces: str = "runs/traces"
    """Traces folder written by `tokenrelay reason` (Parquet shards)."""
    model: str = "models/qwen2.5-coder-1.5b-instruct"
    """The large model that labels (local folder or hub id)."""
    out: str = "runs/ablations/labelers"
    """Output folder: f cache, per-trace results, labelers.{md,csv,json,png}; a rerun resumes."""
    methods: list[str] = field(default_factory=lambda: ["ablation", "loo", "gradient"])
    """Labelers to compare (loo always runs: it is the reference)."""
    masks: list[int] = field(default_factory=lambda: [8, 16, 32, 64])
    """ablation: the m values (random keep-masks per trace) to compare."""
    units: list[str] = field(default_factory=lambda: ["sentence"])
    """Unit granularities to label at: token, word and/or sentence."""
    keep_prob: float = 0.5
    """ablation: probability that a unit is kept in a random mask."""
    min_gain: float = 1.0
    """Only traces whose full transfer raises the gold log-prob by at least this (nats) are used."""
    max_traces: int = 10
    """Stop screening once this many traces qualify."""
    limit: int | None = None
    """Screen only the first N traces."""
    budget: float = 0.25
    """Share of the reasoning tokens kept when measuring gain recovered and leakage."""
    random_draws: int = 3
    """Random selections per trace for the random baseline at the same budget."""
    batch_size: int = 16
    """Transfer prompts scored per forward pass (after the shared prefix)."""
    seed: int = 0
    """Seed of the ablation masks and the random baseline."""
    dtype: str = "float32"
    """Large-model dtype: float32, bfloat16, float16 or auto."""
    device: str = "auto"
    """cpu, cuda, cuda:N or auto."""
    throughput_masks: int = 0
    """Also time batched + prefix-reused scoring against one mask at a time on this many masks (0: skip)."""
    plot: bool = True
    """Write labelers.png: Spearman with loo against cost per labeler."""

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"methods must be a non-empty list from {METHODS}, got {self.methods}")
        if "ablation" in self.methods and (not self.masks or any(m < 1 for m in self.masks)):
            raise ValueError(f"masks must be a non-empty list of m >= 1, got {self.masks}")
        self.masks = sorted(set(self.masks))
        bad = [u for u in self.units if u not in GRANULARITIES]
        if bad or not self.units:
            raise ValueError(f"units must be a non-empty list from {GRANULARITIES}, got {self.units}")
        if not 0 < self.keep_prob < 1:
            raise ValueError(f"keep_prob must be in (0, 1), got {self.keep_prob}")
        if not 0 < self.budget <= 1:
            raise ValueError(f"budget must be a ratio in (0, 1], got {self.budget}")
        for name in ("max_traces", "batch_size", "random_draws"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if self.throughput_masks < 0:
            raise ValueError(f"throughput_masks must be >= 0, got {self.throughput_masks}")
        if self.dtype not in (*DTYPES, "auto"):
            raise ValueError(f"dtype must be one of {[*DTYPES, 'auto']}, got {self.dtype!r}")

    def bench_args(self) -> argparse.Namespace:
        """The options of ``scripts.bench_labels`` (its ``run`` takes them as attributes)."""
        return argparse.Namespace(**asdict(self))


def config_from_yaml(path: str) -> LabelerAblationConfig:
    """Build the config of a YAML file without running it (tests/test_configs.py)."""
    return config_from_argv(LabelerAblationConfig, ["--config", str(path)], PROG)


def _rows(table: dict) -> list[dict]:
    rows = []
    for units, t in table.items():
        for name, row in t.items():
            if not isinstance(row, dict):
                continue
            rows.append(
                {
                    "units": units,
                    "labeler": name,
                    "traces": t["traces"],
                    "spearman_vs_loo": 1.0 if name == "loo" else row.get("spearman_vs_loo"),
                    "forward_passes": row.get("forward_passes"),
                    "est_seconds": row.get("est_seconds"),
                    "gain_recovered": row.get("gain_recovered_at_budget"),
                    "median_gain_recovered": row.get("median_gain_recovered"),
                    "leak_rate": row.get("leak_rate"),
                    "fit_r2": row.get("fit_r2"),
                }
            )
    return sorted(rows, key=lambda r: (r["units"], _order(r["labeler"])))


def _order(name: str) -> tuple[int, int]:
    """loo, ablation by increasing m, gradient, then the random and full references."""
    if name.startswith("ablation@"):
        return (1, int(name.split("@")[1]))
    return ({"loo": 0, "gradient": 2, "random": 3, "full": 4}.get(name, 5), 0)


def _plot(rows: list[dict], path: Path) -> None:
    from selector.evaluation.plots import save_figure, subplots

    fig, axes = subplots(1, 2, figsize=(11, 4.2))
    for units in sorted({r["units"] for r in rows}):
        rs = [r for r in rows if r["units"] == units and r["forward_passes"] is not None]
        for ax, cost, label in (
            (axes[0], "forward_passes", "forward passes per trace"),
            (axes[1], "est_seconds", "est. seconds per trace"),
        ):
            xs = [r[cost] for r in rs]
            ax.scatter(xs, [r["spearman_vs_loo"] for r in rs], label=f"{units} units")
            for r in rs:
                ax.annotate(
                    r["labeler"],
                    (r[cost], r["spearman_vs_loo"]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
            ax.set_xlabel(label)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_ylabel("Spearman with loo")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Labelers: agreement with leave-one-out vs cost")
    save_figure(fig, path)


COLUMNS = [
    ("units", "units", ""),
    ("labeler", "labeler", ""),
    ("traces", "traces", "d"),
    ("spearman_vs_loo", "Spearman vs loo", ".3f"),
    ("forward_passes", "forward passes / trace", ".1f"),
    ("est_seconds", "est. s / trace", ".2f"),
    ("gain_recovered", "gain recovered @budget", ".3f"),
    ("median_gain_recovered", "median", ".3f"),
    ("leak_rate", "leakage", ".2f"),
    ("fit_r2", "surrogate R2", ".3f"),
]


def run_ablation(config: LabelerAblationConfig, agent=None, progress: bool = True) -> dict:
    """Run (or resume) the ablation and write its outputs; ``agent`` reuses a loaded large model."""
    if not Path(config.traces).exists():
        raise FileNotFoundError(f"traces {config.traces!r} do not exist (run `tokenrelay reason` first)")
    out = Path(config.out)
    check_settings(  # what the cached f values and per-trace results depend on
        out,
        {
            k: getattr(config, k)
            for k in ("traces", "model", "keep_prob", "seed", "budget", "dtype", "random_draws")
        },
    )
    report = bench_labels.run(config.bench_args(), agent=agent, progress=progress)
    if report is None:
        raise ValueError(
            f"no trace's full transfer raises the gold log-prob by >= {config.min_gain} nats: "
            "nothing to compare (lower min_gain, or screen more traces)"
        )
    rows = _rows(report["table"])
    result = {
        "config": asdict(config),
        "rows": rows,
        "qualifying": report["qualifying"],
        "bench_labels": str(out / "bench_labels.json"),
    }
    intro = (
        f"# Labeler ablation\n\n{len(report['qualifying'])} traces whose full transfer gains >= "
        f"{config.min_gain} nats; large model `{config.model}`. Cost is per trace for an uncached "
        f"run; gain recovered keeps each labeler's top units up to {config.budget:.0%} of the "
        "reasoning tokens (random: random units, full: all the reasoning)."
    )
    write_outputs(
        out, STEM, result, rows, COLUMNS, intro, plot=(lambda p: _plot(rows, p)) if config.plot else None
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(LabelerAblationConfig, run_ablation, PROG, argv)


if __name__ == "__main__":
    sys.exit(main())
