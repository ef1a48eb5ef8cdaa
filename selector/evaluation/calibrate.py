"""`tokenrelay calibrate`: pick the confidence gate's tau (and the selector and budget) on a dev split.

Input: a `tokenrelay eval` output folder on development questions (not the test questions), whose
grid holds ``large_direct`` and at least one relay condition with gate ``always`` (every question's
transfer answer). For each such relay condition and each tau, the confidence-gated relay's outcome
per question follows from the records without running a model: a question whose direct-answer
probability is >= tau keeps the direct answer and its latency; the others take the transfer's
answer, at the direct latency plus the transfer's (sequential), or with ``concurrent`` at
max(direct, small reasoning) + selection + the final answer (an estimate; `scripts.bench_latency`
measures it). Candidate taus are 0, the midpoints between neighbouring observed probabilities, and 1.

With ``target_accuracy`` the fastest (selector, budget, tau) reaching it (plus ``accuracy_margin``) wins;
with ``target_latency`` the most accurate one within it. The chosen setting's dev accuracy comes with its
Wilson 95% interval: on a few dozen dev questions it spans about ±15-20 points, so a target met exactly on
the dev split is missed on new questions about half the time or more (a margin buys safety with latency).
The choice is written as a `tokenrelay infer` config YAML: a ``relay:`` block holding the eval run's
models and relay options (`tokenrelay infer --config FILE --question ...` reads it). Eval runs written
before the relay options were nested (flat keys in results.json's config) are read too.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from ..io import write_text_atomic

__all__ = [
    "CalibrateConfig",
    "Candidate",
    "TargetUnreachable",
    "calibrate",
    "calibrate_config",
    "candidate_taus",
    "main",
    "tau_frontier",
    "wilson_interval",
]

PROG = "tokenrelay calibrate"
RELAY_FIELDS = ("granularity", "force_numbers", "force_last", "keep_answer_line", "selfinfo_reduce",
                "reason_tokens", "answer_tokens", "dtype", "small_dtype", "device", "seed", "reuse_prompt")  # fmt: skip
"""Eval options carried into the calibrated relay config as they were on the dev run: every one that
changes what a model writes or how fast (a small model at another dtype decodes other text at another
speed), so `infer` runs the relay that was calibrated."""


@dataclass
class CalibrateConfig:
    """`tokenrelay calibrate`: choose the confidence gate's tau (and selector, budget) on a dev split."""

    eval: str | None = None
    """A `tokenrelay eval` output folder on dev questions (records.jsonl + results.json) with
    large_direct and relay conditions at gate 'always'."""
    target_accuracy: float | None = None
    """Reach at least this accuracy (0-1) at the lowest latency (give this or target_latency)."""
    target_latency: float | None = None
    """Stay within this many mean seconds per question at the highest accuracy."""
    accuracy_margin: float = 0.0
    """With target_accuracy: the dev accuracy must reach target + this (0-1). The dev accuracy of a
    few dozen questions is noisy (see the interval the summary reports), so a setting that meets the
    target exactly on dev misses it on new questions about half the time; a margin lowers that risk
    at the cost of more transfers (slower)."""
    conditions: list[str] | None = None
    """Relay conditions to choose from (ids such as 'relay:selfinfo@0.25:always'); default: every
    'always' relay condition of the run."""
    concurrent: bool = False
    """Estimate latency as a concurrent relay (small reasoning alongside the direct answer) and
    write concurrent: true into the config."""
    out: str = "runs/calibrated_relay.yaml"
    """The relay config YAML to write (replaced atomically)."""

    def __post_init__(self) -> None:
        if not self.eval or not str(self.eval).strip():
            raise ValueError("--eval is required: a `tokenrelay eval` output folder on dev questions")
        if (self.target_accuracy is None) == (self.target_latency is None):
            raise ValueError("give exactly one of --target_accuracy or --target_latency")
        if self.target_accuracy is not None and not 0 <= self.target_accuracy <= 1:
            raise ValueError(f"target_accuracy must be in [0, 1], got {self.target_accuracy}")
        if not (math.isfinite(self.accuracy_margin) and 0 <= self.accuracy_margin < 1):
            raise ValueError(f"accuracy_margin must be in [0, 1), got {self.accuracy_margin}")
        if self.accuracy_margin and self.target_accuracy is None:
            raise ValueError("accuracy_margin applies to --target_accuracy only")
        if self.target_latency is not None and not (
            math.isfinite(self.target_latency) and self.target_latency > 0
        ):
            raise ValueError(f"target_latency must be > 0 seconds, got {self.target_latency}")
        if not str(self.out).strip():
            raise ValueError("--out is empty")
        folder = Path(self.eval)
        for name in ("records.jsonl", "results.json"):
            if not (folder / name).exists():
                raise FileNotFoundError(f"{folder / name} does not exist: run `tokenrelay eval` first")


class TargetUnreachable(ValueError):
    """No (condition, tau) on the dev split meets the target: an outcome to report, not a bad input."""


@dataclass
class Candidate:
    """One (relay condition, tau) and its dev-split outcome."""

    condition: str
    tau: float
    accuracy: float
    latency: float
    transfer_rate: float


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion (sound at 0 and n successes, unlike the normal one)."""
    if n <= 0:
        raise ValueError("wilson_interval needs n > 0")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends: no rounding past them
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def candidate_taus(probs: Sequence[float]) -> list[float]:
    """0, the midpoints between neighbouring distinct probabilities, and 1."""
    values = sorted(set(probs))
    mids = [(a + b) / 2 for a, b in pairwise(values)]
    return sorted({0.0, *mids, 1.0})


def _front(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The candidates no other beats on both accuracy and latency, fastest first."""
    from .report import pareto_front

    return [candidates[i] for i in pareto_front([(c.latency, c.accuracy) for c in candidates])]


def _gate_candidates(direct: dict, transfer: dict, condition: str, concurrent: bool) -> list[Candidate]:
    """The confidence gate at every candidate tau over the questions' direct and always-transfer records."""
    probs = [d["direct_prob"] for d in direct.values() if d.get("direct_prob") is not None]
    return [
        Candidate(condition, tau, *evaluate_gate(direct, transfer, tau, concurrent))
        for tau in candidate_taus(probs)
    ]


def tau_frontier(direct: dict, transfer: dict, condition: str, concurrent: bool = False) -> list[Candidate]:
    """The confidence gate's Pareto front over every tau, from the direct answers and the always-transfer
    answers of the same questions (no model runs): the whole trade-off one relay condition offers."""
    return _front(_gate_candidates(direct, transfer, condition, concurrent))


def _seconds(record: dict, stage: str) -> float:
    return (record.get("stages") or {}).get(stage, {}).get("seconds", 0.0)


def evaluate_gate(
    direct: dict, transfer: dict, tau: float, concurrent: bool = False
) -> tuple[float, float, float]:
    """(accuracy, mean latency, transfer rate) of the confidence gate at ``tau`` over the shared ids."""
    correct, latency, moved = [], [], 0
    for qid, d in direct.items():
        t = transfer[qid]
        p = d.get("direct_prob")
        if p is not None and p >= tau:
            correct.append(bool(d.get("correct")))
            latency.append(d["latency_s"])
            continue
        moved += 1
        correct.append(bool(t.get("correct")))
        if concurrent:
            tail = sum(_seconds(t, s) for s in ("selection", "large_prefill", "large_decode"))
            latency.append(max(d["latency_s"], _seconds(t, "small_reasoning")) + tail)
        else:
            latency.append(d["latency_s"] + t["latency_s"])
    n = len(direct)
    return sum(correct) / n, statistics.fmean(latency), moved / n


def _records(folder: Path) -> dict[str, dict[str, dict]]:
    by_condition: dict[str, dict[str, dict]] = {}
    for line in (folder / "records.jsonl").read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            by_condition.setdefault(r["condition"], {})[r["id"]] = r
    return by_condition


def calibrate(config: CalibrateConfig) -> dict:
    """Score every (condition, tau), choose by the target, write the relay config; returns a summary."""
    folder = Path(config.eval)
    records = _records(folder)
    result = json.loads((folder / "results.json").read_text())
    if "large_direct" not in records:
        raise ValueError(f"{folder}: the eval run has no large_direct condition (add it to --conditions)")
    direct = records["large_direct"]
    always = [c for c in records if c.startswith("relay:") and c.endswith(":always")]
    chosen_conditions = config.conditions or always
    missing = [c for c in chosen_conditions if c not in always]
    if missing or not chosen_conditions:
        raise ValueError(
            f"no relay condition at gate 'always' named {missing or ''} in {folder}; it has {always}"
        )
    candidates = []
    for cond in chosen_conditions:
        if set(records[cond]) != set(direct):
            raise ValueError(f"{cond} and large_direct cover different questions in {folder}")
        candidates += _gate_candidates(direct, records[cond], cond, config.concurrent)
    if config.target_accuracy is not None:
        need = config.target_accuracy + config.accuracy_margin
        ok = [c for c in candidates if c.accuracy >= need - 1e-12]
        if not ok:
            best = max(c.accuracy for c in candidates)
            margin = f" (target + margin {config.accuracy_margin:g})" if config.accuracy_margin else ""
            raise TargetUnreachable(
                f"no setting reaches accuracy {need:.3f}{margin} on the dev split (best {best:.3f})"
            )
        best = min(ok, key=lambda c: (c.latency, -c.accuracy, c.tau))
    else:
        ok = [c for c in candidates if c.latency <= config.target_latency]
        if not ok:
            fastest = min(c.latency for c in candidates)
            raise TargetUnreachable(
                f"no setting stays within {config.target_latency:g} s on the dev split (fastest {fastest:.2f} s)"
            )
        best = max(ok, key=lambda c: (c.accuracy, -c.latency, -c.tau))
    row = next(r for r in result["rows"] if r["condition"] == best.condition)
    relay = _relay_options(result, row, best, config)
    interval = wilson_interval(round(best.accuracy * len(direct)), len(direct))
    _write_yaml(Path(config.out), relay, best, config, len(direct), interval)
    return {"chosen": best.__dict__, "accuracy_interval": list(interval), "relay": relay,
            "candidates": [c.__dict__ for c in candidates], "frontier": [c.__dict__ for c in _front(candidates)],
            "questions": len(direct), "out": str(config.out)}  # fmt: skip


def _relay_options(result: dict, row: dict, best: Candidate, config: CalibrateConfig) -> dict:
    from ..baselines import BASELINES
    from .grid import selector_labels

    evalcfg = result.get("config", {})
    flat = "relay" not in evalcfg  # an eval run from before the nested relay config
    relaycfg = evalcfg if flat else evalcfg["relay"]
    labels = selector_labels(evalcfg.get("selectors") or [row["selector"]])
    selector = next((s for s, lab in labels.items() if lab == row["selector"]), row["selector"])
    options = {"small": result.get("small"), "large": result.get("large"), "selector": selector}
    if row.get("budget") is not None:
        options.update(budget=row["budget"], budget_kind=result.get("budget_kind", "ratio"))
    else:
        options.update(budget=1.0, budget_kind="ratio")
    options.update(gate="confidence", tau=round(best.tau, 6))
    options.update({k: relaycfg[k] for k in RELAY_FIELDS if k in relaycfg})
    if flat and selector not in BASELINES:  # its granularity was for baselines: a trained one used its own
        options["granularity"] = "auto"
    if config.concurrent:
        options["concurrent"] = True
    from ..relay import RelayConfig

    RelayConfig(**options)  # refuse to write a config the relay would not accept
    return options


def _write_yaml(
    path: Path, relay: dict, best: Candidate, config: CalibrateConfig, n: int, interval: tuple[float, float]
) -> None:
    import yaml

    target = (
        f"accuracy >= {config.target_accuracy:g}"
        + (f" + margin {config.accuracy_margin:g}" if config.accuracy_margin else "")
        if config.target_accuracy is not None
        else f"latency <= {config.target_latency:g} s"
    )
    head = (
        f"# tokenrelay infer --config {path} --question '...'   (or --data FILE --out FILE.jsonl)\n"
        f"# Calibrated by `tokenrelay calibrate` on {config.eval} ({n} dev questions), target {target}:\n"
        f"# {best.condition} gated at tau {best.tau:.4g}: dev accuracy {best.accuracy:.3f} "
        f"(95% interval {interval[0]:.3f}-{interval[1]:.3f}), "
        f"mean latency {best.latency:.2f} s ({'concurrent estimate' if config.concurrent else 'sequential'}), "
        f"transfer rate {best.transfer_rate:.2f}\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, head + yaml.safe_dump({"relay": relay}, sort_keys=False))


def calibrate_config(path: str) -> CalibrateConfig:
    from ..cmdline import parse_config

    return parse_config(CalibrateConfig, ["--config", str(path)], PROG)


def main(argv: Sequence[str]) -> int:
    from ..cmdline import parse_config, run_command

    def body() -> None:
        config = parse_config(CalibrateConfig, argv, PROG)
        summary = calibrate(config)
        c = summary["chosen"]
        lo, hi = summary["accuracy_interval"]
        print(
            f"{c['condition']} at tau {c['tau']:.4g}: dev accuracy {c['accuracy']:.3f} (95% interval "
            f"{lo:.3f}-{hi:.3f}), mean latency {c['latency']:.2f} s, transfer rate {c['transfer_rate']:.2f} "
            f"({summary['questions']} questions)"
        )
        print(f"relay config written to {summary['out']}")
        print("accuracy / latency frontier on these questions (* chosen):")
        for f in summary["frontier"]:
            mark = "*" if (f["condition"], f["tau"]) == (c["condition"], c["tau"]) else " "
            print(
                f"{mark} tau {f['tau']:<8.4g} accuracy {f['accuracy']:.3f}  latency {f['latency']:7.2f} s  "
                f"transfer rate {f['transfer_rate']:.2f}  {f['condition']}"
            )

    return run_command(body, PROG)
