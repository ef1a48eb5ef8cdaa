"""Gate sweep: the confidence gate over thresholds tau (and the agreement gate), exactly and cheaply.

    python -m scripts.ablate_gate --config configs/ablations/gate.yaml [--selector runs/selector/selector]

Each question is answered twice through ``selector.relay.Relay``, once per path, and never again:

- gate ``never``: the large model's direct answer and its probability p (exp of the mean token
  log-prob of the answer line, the confidence gate's signal);
- gate ``always``: the small model's reasoning, the selector's transfer at the configured budget,
  and the large model's answer from it.

Every gate is then applied post hoc, per question: the confidence gate at tau answers directly
when p >= tau and from the transfer otherwise (``selector.gating.Gate`` decides, as in the relay);
the agreement gate transfers when the small and direct answers disagree. A row reports accuracy,
leakage (the final answer came from a transfer stating the gold answer), transfer rate,
transferred tokens and mean end-to-end latency, accounted sequentially as the relay does: the
direct answer, plus small reasoning + selection + the transfer answer when transferred. With greedy
decoding this is exactly what a gated relay run gives (``batch_size: 1`` makes the per-question
stage times exact; larger batches count a batch's wall time for each of its questions).
Rows ``never`` and ``always`` are the two runs themselves (``always`` computes no direct answer).

Resumable: each run's per-question results are appended to ``OUT/direct.jsonl`` and
``OUT/transfer.jsonl`` after every batch; a rerun answers only the questions missing there, and a
new tau list costs nothing. Writes ``gate_sweep.{md,csv,json,png}`` to ``out``.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from scripts.ablation_common import check_settings, config_from_argv, main_for, write_outputs
from selector.data import ColumnMap, Example, load_examples
from selector.gating import Gate
from selector.progress import progress_bar
from selector.relay import STAGES, Relay, RelayConfig, check_images

PROG = "python -m scripts.ablate_gate"
STEM = "gate_sweep"
TRANSFER_STAGES = ("small_reasoning", "selection", "large_prefill", "large_decode")


@dataclass
class GateSweepConfig(RelayConfig):
    """Gate sweep: accuracy, transfer rate and latency of the confidence gate per tau, and of agreement.

    The relay options (models, selector, budget, tokens, ...) are those of `tokenrelay infer`;
    its gate and tau are not used: every gate is applied post hoc to one direct and one transfer run.
    """

    data: str = "data/test.jsonl"
    """Questions with gold answers: a JSONL / CSV / Parquet file, a save_to_disk folder or a hub id."""
    out: str = "runs/ablations/gate"
    """Output folder: per-question direct.jsonl / transfer.jsonl (resumable) and gate_sweep.{md,csv,json,png}."""
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
        super().__post_init__()
        if self.large is None or self.small is None:
            raise ValueError("the gate sweep needs both models: small and large")
        if self.parallel:
            raise ValueError("the gate sweep accounts latency sequentially; set parallel: false")
        if not self.taus:
            raise ValueError("taus is empty")
        for tau in self.taus:
            Gate("confidence", tau)  # validates: 0 <= tau <= 1
        self.taus = sorted(set(float(t) for t in self.taus))
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")

    def relay_config(self, gate: str) -> RelayConfig:
        return replace(RelayConfig(**{f.name: getattr(self, f.name) for f in fields(RelayConfig)}), gate=gate)


def config_from_yaml(path: str) -> GateSweepConfig:
    """Build the config of a YAML file without running it (tests/test_configs.py)."""
    return config_from_argv(GateSweepConfig, ["--config", str(path)], PROG)


# --------------------------------------------------------------------------- per-question runs


def _read_jsonl(path: Path) -> dict[str, dict]:
    """Records by id; a last line cut short by a kill is ignored (its batch runs again)."""
    records: dict[str, dict] = {}
    if not path.exists():
        return records
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        records.setdefault(str(rec["id"]), rec)
    return records


def run_path(
    relay: Relay, examples: list[Example], path: Path, label: str, progress: bool
) -> dict[str, dict]:
    """Answer the examples not yet in ``path`` with ``relay``, appending each batch; all records by id."""
    done = _read_jsonl(path)
    todo = [ex for ex in examples if ex.id not in done]
    size = relay.config.batch_size
    with progress_bar(disable=not progress) as bar:
        task = bar.add_task(label, total=len(examples), completed=len(examples) - len(todo))
        for start in range(0, len(todo), size):
            batch = relay.run(todo[start : start + size], progress=False)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                for r in batch:
                    rec = r.to_record()
                    f.write(json.dumps(rec) + "\n")
                    done[str(rec["id"])] = rec
                f.flush()
            bar.advance(task, len(batch))
    return done


def _stage_s(rec: dict, names: Sequence[str]) -> float:
    stages = rec.get("stages") or {}
    return math.fsum(stages[s]["seconds"] for s in names if s in stages)


# --------------------------------------------------------------------------- post-hoc gates


def _row(name: str, tau: float | None, per_q: list[dict]) -> dict:
    graded = [q for q in per_q if q["correct"] is not None]
    transferred = [q for q in per_q if q["transfer"]]
    logprobs = [q["gold_logprob"] for q in per_q if q["gold_logprob"] is not None]
    return {
        "gate": name,
        "tau": tau,
        "questions": len(per_q),
        "accuracy": statistics.fmean(q["correct"] for q in graded) if graded else None,
        "leak_rate": statistics.fmean(q["leaked"] for q in graded) if graded else None,
        "transfer_rate": len(transferred) / len(per_q),
        "transferred_tokens": statistics.fmean(q["tokens"] for q in per_q),
        "latency_s": statistics.fmean(q["latency"] for q in per_q),
        "gold_logprob": statistics.fmean(logprobs) if len(logprobs) == len(per_q) else None,
    }


def gate_rows(
    examples: list[Example], direct: dict[str, dict], transfer: dict[str, dict], taus
) -> list[dict]:
    """One row per gate from the two runs (see the module docstring for the accounting)."""
    pairs = [(direct[ex.id], transfer[ex.id]) for ex in examples]

    def outcome(d: dict, t: dict, go: bool, with_direct: bool = True) -> dict:
        src = t if go else d
        latency = (_stage_s(d, ["large_direct"]) if with_direct else 0.0) + (
            _stage_s(t, TRANSFER_STAGES) if go else 0.0
        )
        return {
            "transfer": go,
            "correct": src["correct"],
            "leaked": bool(t["leaked"]) if go else False,
            "tokens": t["transfer_tokens"] if go else 0,
            "latency": latency,
            "gold_logprob": src.get("gold_logprob"),
        }

    rows = [
        _row("never", None, [outcome(d, t, False) for d, t in pairs]),
        _row("always", None, [outcome(d, t, True, with_direct=False) for d, t in pairs]),
    ]
    for tau in taus:
        gate = Gate("confidence", tau)
        # no direct-answer probability (nothing generated): treated as p = 0, i.e. transfer
        per_q = [
            outcome(d, t, gate.transfer(d["direct_answer"], d["direct_prob"] or 0.0, t["small_answer"]))
            for d, t in pairs
        ]
        rows.append(_row("confidence", tau, per_q))
    agree = Gate("agreement")
    rows.append(
        _row(
            "agreement",
            None,
            [
                outcome(d, t, agree.transfer(d["direct_answer"], d["direct_prob"], t["small_answer"]))
                for d, t in pairs
            ],
        )
    )
    return rows


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
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_sweep(config: GateSweepConfig, small=None, large=None, progress: bool = True) -> dict:
    """Run (or resume) the two per-question runs, apply every gate, write the outputs.

    ``small`` / ``large`` reuse loaded Agents (tests, notebooks).
    """
    examples = load_examples(config.data, config.columns, split=config.split, limit=config.limit)
    check_images(examples)
    if len({ex.id for ex in examples}) != len(examples):
        raise ValueError(f"{config.data!r}: example ids repeat; the per-question results are keyed by id")
    out = Path(config.out)
    relay_fields = {f.name for f in fields(RelayConfig)} - {"gate", "tau", "parallel", "device"}
    check_settings(
        out,
        {
            **{k: getattr(config, k) for k in sorted(relay_fields)},
            "data": config.data,
            "split": config.split,
            "columns": asdict(config.columns),
        },
    )
    if large is None or small is None:
        from selector.agents import Agent

        load = {"dtype": config.dtype, "device": config.device}
        large = large or Agent.from_pretrained(config.large, **load)
        small = small or Agent.from_pretrained(config.small, **load)
    direct = run_path(
        Relay(None, large, "none", config.relay_config("never")),
        examples,
        out / "direct.jsonl",
        "large direct answers",
        progress,
    )
    relay = Relay(small, large, config.selector, config.relay_config("always"))
    transfer = run_path(relay, examples, out / "transfer.jsonl", "transfer answers", progress)
    rows = gate_rows(examples, direct, transfer, config.taus)
    stage_means = {
        s: statistics.fmean(
            _stage_s(direct[ex.id] if s == "large_direct" else transfer[ex.id], [s]) for ex in examples
        )
        for s in STAGES
    }
    result = {
        "config": asdict(config),
        "questions": len(examples),
        "stage_seconds": stage_means,
        "rows": rows,
    }
    intro = (
        f"# Gate sweep\n\n{len(examples)} questions from `{config.data}`; selector `{config.selector}` at "
        f"{config.budget_kind} budget {config.budget:g}; batch size {config.batch_size}. Latency: direct answer, "
        "plus small reasoning + selection + transfer answer when transferred ('always' has no direct answer). "
        "Mean stage seconds: " + ", ".join(f"{k} {v:.3f}" for k, v in stage_means.items()) + "."
    )
    write_outputs(
        out, STEM, result, rows, COLUMNS, intro, plot=(lambda p: _plot(rows, p)) if config.plot else None
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(GateSweepConfig, run_sweep, PROG, argv)


if __name__ == "__main__":
    sys.exit(main())
