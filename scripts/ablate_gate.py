"""Gate sweep: the confidence gate over thresholds tau (and the agreement gate), through the evaluation engine.

    python -m scripts.ablate_gate --config configs/ablations/gate.yaml [--selector runs/selector/selector]

A preset of ``selector.evaluation.run_eval`` (the engine behind `tokenrelay eval`): one engine run
per tau over the conditions large_direct and relay (the configured selector and budget) with gates
always, agreement and confidence. Gating, selection, stage accounting and metrics are the engine's
(its relay is ``selector.relay.Relay`` itself), and its cache (``OUT/cache``: every model output with
the stage times measured when it was computed) means each question is answered directly once and
through the transfer once, whatever the number of taus: a new tau list costs no model call.

A row reports accuracy, leakage, transfer rate, transferred tokens, mean end-to-end latency as the
relay accounts it (the direct answer, plus small reasoning + selection + the transfer answer when
transferred; ``always`` computes no direct answer) and the mean gold log-prob. ``batch_size: 1``
makes per-question stage times exact (larger batches count a batch's wall time per question).
Writes ``gate_sweep.{md,csv,json,png}`` to ``out`` (the engine's own ``results.*`` there hold its
last run).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from scripts.ablation_common import check_settings, config_from_argv, main_for, write_outputs
from selector.data import ColumnMap
from selector.evaluation import FIXED_SELECTORS, EvalConfig, run_eval
from selector.gating import Gate
from selector.relay import STAGES, RelayConfig

PROG = "python -m scripts.ablate_gate"
STEM = "gate_sweep"


@dataclass
class GateSweepConfig:
    """Gate sweep: accuracy, transfer rate and latency of the confidence gate per tau, and of agreement."""

    relay: RelayConfig = field(default_factory=RelayConfig)
    """The relay swept, as for `tokenrelay infer` (models, selector, budget, tokens, ...); its gate and
    tau are not used: the sweep runs every gate and each tau of taus, through the evaluation engine."""
    data: str = "data/test.jsonl"
    """Questions with gold answers: a JSONL / CSV / Parquet file, a save_to_disk folder or a hub id."""
    out: str = "runs/ablations/gate"
    """Output folder: the engine's cache/ (model outputs, reused by every tau) and gate_sweep.{md,csv,json,png}."""
    taus: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    """Confidence-gate thresholds: transfer when p(direct answer) < tau."""
    limit: int | None = None
    """Use only the first N examples."""
    split: str | None = None
    """Split to read from a DatasetDict folder or hub dataset."""
    columns: ColumnMap = field(default_factory=ColumnMap)
    """Column names in the data."""
    plot: bool = True
    """Write gate_sweep.png: accuracy against mean latency per gate, and transfer rate per tau."""

    def __post_init__(self) -> None:
        if self.relay.large is None or self.relay.small is None:
            raise ValueError("the gate sweep needs both models: relay.small and relay.large")
        if self.relay.parallel:
            raise ValueError("the gate sweep accounts latency sequentially; set relay.parallel: false")
        if not self.taus:
            raise ValueError("taus is empty")
        for tau in self.taus:
            Gate("confidence", tau)  # validates: 0 <= tau <= 1
        self.taus = sorted(set(float(t) for t in self.taus))
        engine_config(self, ["always", "agreement", "confidence"], self.taus[0])  # the engine's own checks

    def relay_config(self, gate: str) -> RelayConfig:
        return replace(self.relay, gate=gate)


def config_from_yaml(path: str) -> GateSweepConfig:
    """Build the config of a YAML file without running it (tests/test_configs.py)."""
    return config_from_argv(GateSweepConfig, ["--config", str(path)], PROG)


def engine_config(config: GateSweepConfig, gates: list[str], tau: float) -> EvalConfig:
    """The evaluation engine's config for one run of the sweep (the relay options carried over)."""
    relay = config.relay
    fixed = relay.selector in FIXED_SELECTORS
    return EvalConfig(
        data=config.data, columns=config.columns, split=config.split, limit=config.limit, out=config.out,
        relay=replace(relay, budget=None, tau=tau), selectors=[relay.selector],
        budgets=[] if fixed else [relay.budget_value], gates=gates, conditions=["large_direct", "relay"],
        plot=False,
    )  # fmt: skip


def _row(gate: str, tau: float | None, row: dict) -> dict:
    """A sweep row from an engine row (the direct answers transfer nothing and leak nothing)."""
    direct = row["kind"] == "large_direct"
    gold = row["gold_logprob"]
    return {
        "gate": gate,
        "tau": tau,
        "questions": row["n"],
        "accuracy": row["accuracy"],
        "leak_rate": 0.0 if direct else row["leakage"],
        "transfer_rate": 0.0 if direct else row["transfer_rate"],
        "transferred_tokens": row["transferred_tokens"],
        "latency_s": row["end_to_end"],
        "gold_logprob": gold if gold is not None and math.isfinite(gold) else None,
        "stages": row["latency"],
    }


COLUMNS = [
    ("gate", "gate", ""),
    ("tau", "tau", ".3g"),
    ("accuracy", "accuracy", ".3f"),
    ("leak_rate", "leakage", ".3f"),
    ("transfer_rate", "transfer rate", ".2f"),
    ("transferred_tokens", "transferred tokens", ".1f"),
    ("latency_s", "mean latency s", ".3f"),
    ("gold_logprob", "gold log-prob", ".3f"),
]


def _plot(rows: list[dict], path: Path) -> None:
    from selector.evaluation.plots import save_figure, subplots

    fig, (left, right) = subplots(1, 2, figsize=(11, 4.2))
    conf = [r for r in rows if r["gate"] == "confidence"]
    left.plot(
        [r["latency_s"] for r in conf], [r["accuracy"] or 0 for r in conf], marker="o", label="confidence"
    )
    for r in conf:
        left.annotate(
            f"{r['tau']:.3g}",
            (r["latency_s"], r["accuracy"] or 0),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    for r in rows:
        if r["gate"] != "confidence":
            left.scatter([r["latency_s"]], [r["accuracy"] or 0], marker="*", s=120, zorder=3, label=r["gate"])
    left.set_xlabel("mean end-to-end latency (s)")
    left.set_ylabel("accuracy")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    right.plot(
        [r["tau"] for r in conf], [r["transfer_rate"] for r in conf], marker="o", label="transfer rate"
    )
    right.plot([r["tau"] for r in conf], [r["accuracy"] or 0 for r in conf], marker="s", label="accuracy")
    right.set_xlabel("tau (transfer when p(direct answer) < tau)")
    right.set_xlim(-0.02, 1.02)
    right.set_ylim(-0.02, 1.02)
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    fig.suptitle("Gate sweep")
    save_figure(fig, path)


def run_sweep(config: GateSweepConfig, small=None, large=None, progress: bool = True) -> dict:
    """Run the engine once per tau (every model output after the first run comes from its cache);
    write and return the sweep. ``small`` / ``large`` reuse loaded Agents (tests, notebooks)."""
    out = Path(config.out)
    relay_fields = {f.name for f in fields(RelayConfig)} - {"gate", "tau", "parallel", "device"}
    relay = replace(config.relay, budget=config.relay.budget_value)  # None and the kind's default alike
    check_settings(
        out,
        {
            **{k: getattr(relay, k) for k in sorted(relay_fields)},
            "data": config.data,
            "split": config.split,
            "columns": asdict(config.columns),
        },
    )
    if large is None or small is None:
        from selector.agents import Agent

        relay = relay.resolve_dtypes()
        large = large or Agent.from_pretrained(relay.large, **relay.load_kwargs("large"))
        small = small or Agent.from_pretrained(relay.small, **relay.load_kwargs("small"))
    rows: list[dict] = []
    confidence: list[dict] = []
    for i, tau in enumerate(config.taus):
        gates = ["always", "agreement", "confidence"] if i == 0 else ["confidence"]
        result = run_eval(engine_config(config, gates, tau), agents=(small, large), progress=progress)
        by_gate = {r["gate"] or r["kind"]: r for r in result["rows"]}
        if i == 0:
            first = result
            rows += [_row("never", None, by_gate["large_direct"]), _row("always", None, by_gate["always"])]
            agreement = _row("agreement", None, by_gate["agreement"])
        confidence.append(_row("confidence", tau, by_gate["confidence"]))
    rows += [*confidence, agreement]
    never, always = rows[0]["stages"], rows[1]["stages"]
    stage_means = {s: (never if s == "large_direct" else always)[s] for s in STAGES}
    result = {
        "config": asdict(config),
        "questions": first["questions"],
        "stage_seconds": stage_means,
        "rows": rows,
    }
    intro = (
        f"# Gate sweep\n\n{first['questions']} questions from `{config.data}`; selector `{relay.selector}` at "
        f"{relay.budget_kind} budget {relay.budget:g}; batch size {relay.batch_size}; run through the "
        "evaluation engine. Latency: direct answer, plus small reasoning + selection + transfer answer when "
        "transferred ('always' has no direct answer). Mean stage seconds: "
        + ", ".join(f"{k} {v:.3f}" for k, v in stage_means.items())
        + "."
    )
    write_outputs(
        out, STEM, result, rows, COLUMNS, intro, plot=(lambda p: _plot(rows, p)) if config.plot else None
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(GateSweepConfig, run_sweep, PROG, argv)


if __name__ == "__main__":
    sys.exit(main())
