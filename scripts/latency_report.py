"""The latency benchmark's report (``scripts.bench_latency``): its markdown table, JSON and plot, and the paired
statistics of a configuration against the large model's own reasoning (also used by ``scripts.pool_latency``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from selector.evaluation.paired import paired_comparison
from selector.evaluation.report import plot_latency
from selector.io import write_json_atomic, write_text_atomic

__all__ = ["markdown", "paired_with_own", "write_report"]


def paired_with_own(row: list[tuple], own: list[tuple], n_boot: int = 2000, seed: int = 0) -> dict:
    """A configuration against the large model's own reasoning on the same questions: the paired
    accuracy difference (bootstrap 95% interval, wins / losses / ties) and a bootstrap 95% interval
    of the latency ratio (mean over resampled questions / the same questions' own-reasoning mean)."""
    if not row or len(row) != len(own):
        return {}
    correct, own_correct = ([None if c is None else float(c) for c, _ in side] for side in (row, own))
    seconds, own_seconds = (np.array([s for _, s in side], dtype=np.float64) for side in (row, own))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(row), size=(n_boot, len(row)))
    ratios = seconds[idx].mean(axis=1) / np.maximum(own_seconds[idx].mean(axis=1), 1e-12)
    low, high = (float(v) for v in np.quantile(ratios, [0.025, 0.975]))
    return {"accuracy_vs_own": paired_comparison(correct, own_correct, n_boot=n_boot, seed=seed),
            "ratio_ci": [low, high]}  # fmt: skip


def markdown(result: dict) -> str:
    head = ("| condition | accuracy | gold log-prob | transfer rate | end-to-end s | / large reasoning "
            "| threads (large/small) | Pareto |")  # fmt: skip
    lines = [head, "|" + " --- |" * 8]
    for r in result["rows"]:
        lp = "" if r["gold_logprob"] is None else f"{r['gold_logprob']:.2f}"
        rate = "" if r["transfer_rate"] is None else f"{r['transfer_rate']:.0%}"
        ratio = "" if r["ratio_to_large_reasoning"] is None else f"{r['ratio_to_large_reasoning']:.2f}"
        lines.append(
            f"| {r['title']} | {r['accuracy']:.1%} | {lp} | {rate} | {r['end_to_end']:.2f} | {ratio} "
            f"| {r['threads']['large']}/{r['threads']['small']} | {'*' if r['pareto'] else ''} |"
        )
    levers = [r for r in result["rows"] if "vs_sequential" in r]
    if levers:
        lines += ["", "| lever vs the sequential agreement relay | latency removed s | accuracy change | gold log-prob change |",
                  "| --- | --- | --- | --- |"]  # fmt: skip
        for r in levers:
            d = r["vs_sequential"]
            lines.append(f"| {r['levers']} | {d['latency_removed_s']:.2f} | {d['accuracy_change']:+.1%} "
                         f"| {d['gold_logprob_change']:+.2f} |")  # fmt: skip
    walled = [r for r in result["rows"] if r.get("wall_s") is not None]
    if walled:
        lines += ["", "Wall time per question around each live relay call (an upper bound: it includes the gold "
                      "scoring the latency leaves out; a large gap would be work the stage times miss): "
                  + "; ".join(f"{r['levers']} {r['wall_s']:.2f} s (latency {r['end_to_end']:.2f} s)" for r in walled)]  # fmt: skip
    best = result.get("best")
    own = next((r for r in result["rows"] if r["kind"] == "large_reasoning"), None)
    if result.get("gate_frontier"):
        lines += ["", f"The confidence gate at every tau on these questions ({result['gate_frontier'][0]['condition']}; "
                      "from the large-direct and always-transfer rows, sequential; the Pareto points):", "",
                  "| tau | transfer rate | accuracy | s | / large reasoning |", "|" + " --- |" * 5]  # fmt: skip
        lines += [f"| {f['tau']:.3g} | {f['transfer_rate']:.0%} | {f['accuracy']:.1%} | {f['latency']:.2f} "
                  f"| {f['ratio_to_large_reasoning']:.3f} |" for f in result["gate_frontier"]]  # fmt: skip
        if own is not None:
            ok = [f for f in result["gate_frontier"] if f["accuracy"] >= own["accuracy"] - 1e-12]
            lines += ["", f"At the large model's own accuracy ({own['accuracy']:.1%}) the gate needs tau "
                          f"{ok[0]['tau']:.3g}: {ok[0]['ratio_to_large_reasoning']:.3f} of its time." if ok else
                          f"No tau reaches the large model's own accuracy ({own['accuracy']:.1%}) on these questions."]  # fmt: skip
    if own is not None and not best:
        lines += ["", f"No configuration reaches the large model's own accuracy ({own['accuracy']:.1%}) but its "
                      "own reasoning: on this task the relay does not pay."]  # fmt: skip
    if best:
        lines += ["", f"Fastest at >= the large model's own accuracy ({best['large_reasoning_accuracy']:.1%}): "
                      f"{best['condition']}, {best['accuracy']:.1%} in {best['end_to_end']:.2f} s = "
                      f"{best['ratio_to_large_reasoning']:.3f} of the large model's own reasoning."]  # fmt: skip
        if best.get("ratio_ci"):
            acc = best["accuracy_vs_own"]
            lines += [f"Paired over the same questions: latency ratio 95% interval [{best['ratio_ci'][0]:.3f}, "
                      f"{best['ratio_ci'][1]:.3f}]; accuracy minus the large model's own {acc['mean_diff']:+.1%} "
                      f"[{acc['ci_low']:+.1%}, {acc['ci_high']:+.1%}], wins / losses / ties "
                      f"{acc['wins']}/{acc['losses']}/{acc['ties']} (n = {acc['n']})."]  # fmt: skip
    return "\n".join(lines)


def _dev_interval(result: dict) -> str:
    """The calibrated setting's dev accuracy and its 95% interval: how far a test accuracy may drift from it."""
    chosen, interval = result.get("calibration"), result.get("calibration_interval")
    if not chosen or not interval:
        return ""
    return f"; dev accuracy {chosen['accuracy']:.3f}, 95% interval [{interval[0]:.3f}, {interval[1]:.3f}]"


def _tau_note(result: dict) -> str:
    """How tau was set: calibrated (target, margin, dev interval), or why the calibration found none."""
    if result.get("calibration_unreachable"):
        return (f" (uncalibrated: {result['calibration_unreachable']}, for the target "
                f"{result['calibration_target_accuracy']:.3f}; the calibrated levers were not run)")  # fmt: skip
    if result.get("calibration") is None or result.get("calibration_target_accuracy") is None:
        return ""
    margin = f" + margin {result['calibration_margin']:g}" if result.get("calibration_margin") else ""
    return (f" (calibrated on the dev questions for accuracy >= {result['calibration_target_accuracy']:.3f}"
            f"{margin}{_dev_interval(result)})")  # fmt: skip


def _dtypes_note(result: dict) -> str:
    """The dtype each model ran in (``fastest`` already replaced by what was measured)."""
    config = result.get("config") or {}
    relay = config.get("relay") or {}
    if not relay.get("dtype"):
        return ""
    own = config.get("large_reason_dtype") or relay["dtype"]
    return (f" Dtypes: the large model {relay['dtype']} (its own reasoning {own}), the small model "
            f"{relay.get('small_dtype') or relay['dtype']}.")  # fmt: skip


def write_report(result: dict, out: Path) -> None:
    """OUT/latency.md (the intro and the tables), OUT/latency.json (everything) and OUT/latency.png (the front)."""
    intro = (f"# Latency benchmark\n\n{result['questions']} questions from `{result['data']}`, batch 1, "
             f"{result['cores']} torch threads in the process; confidence tau {result['tau']:.4g}"
             f"{_tau_note(result)}.{_dtypes_note(result)}\n\n")  # fmt: skip
    write_text_atomic(out / "latency.md", intro + markdown(result) + "\n")
    write_json_atomic(out / "latency.json", result, default=str)
    plot_latency(result, out / "latency.png")
