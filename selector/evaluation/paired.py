"""Paired statistics: does a selector beat the best one-line heuristic on the same problems?

Every comparison is per problem: the mean of the per-problem differences, a percentile bootstrap
95% interval of that mean (problems resampled with replacement), and wins / losses / ties. The
"best heuristic" at a budget and gate is the one of first / last / random / selfinfo with the
highest mean on the very problems compared (chosen separately for gold log-prob and for gain
recovered) — a choice made with hindsight, so it favours the heuristic, never the selector.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["HEURISTICS", "paired_comparison", "paired_markdown", "paired_vs_references"]

HEURISTICS = ("first", "last", "random", "selfinfo")
"""One-line selectors a trained one must beat."""
NOT_CANDIDATES = (*HEURISTICS, "none", "full")


def paired_comparison(
    a: Sequence[float | None],
    b: Sequence[float | None],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    tie_tol: float = 1e-6,
    level: float = 0.95,
) -> dict:
    """Per-problem a - b over the problems where both are known: mean, bootstrap interval, W/L/T, and
    the median (gold log-probs are heavy-tailed: a few problems can carry the mean)."""
    if len(a) != len(b):
        raise ValueError(
            f"paired comparison needs one value per problem on both sides ({len(a)} vs {len(b)})"
        )
    if n_boot < 1 or not 0 < level < 1:
        raise ValueError("need n_boot >= 1 and 0 < level < 1")
    diffs = np.array([x - y for x, y in zip(a, b) if x is not None and y is not None], dtype=np.float64)
    n = len(diffs)
    out = {"n": n, "mean_diff": None, "median_diff": None, "ci_low": None, "ci_high": None, "wins": 0, "losses": 0,
           "ties": 0}  # fmt: skip
    if n == 0:
        return out
    out["wins"] = int((diffs > tie_tol).sum())
    out["losses"] = int((diffs < -tie_tol).sum())
    out["ties"] = n - out["wins"] - out["losses"]
    out["mean_diff"] = float(diffs.mean())
    out["median_diff"] = float(np.median(diffs))
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    tail = (1 - level) / 2
    out["ci_low"], out["ci_high"] = (float(v) for v in np.quantile(means, [tail, 1 - tail]))
    return out


def _gain(value: float | None, none: float, full: float | None, min_nats: float) -> float | None:
    if value is None or full is None or full - none < min_nats:
        return None
    return (value - none) / (full - none)


def _mean_known(values: Sequence[float | None]) -> float:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else float("-inf")


def paired_vs_references(
    conditions: Sequence[Mapping],
    logprobs: Mapping[str, Sequence[float | None]],
    f_none: Sequence[float],
    f_all: Sequence[float | None],
    *,
    gain_min_nats: float = 1.0,
    n_boot: int = 2000,
    seed: int = 0,
) -> list[dict]:
    """For each relay condition of a candidate selector (trained, oracle, ...): paired differences in
    gold log-prob and gain recovered against the best heuristic at its budget and gate, and against
    the full transfer and no transfer (``none``) at its gate; a selector that may send nothing
    (``ScorerConfig.min_score``) must beat sending nothing, or it is only a gate.

    ``conditions`` are result rows (``condition``, ``kind``, ``selector``, ``budget``, ``gate``);
    ``logprobs`` maps a condition id to its per-problem gold log-probs, in problem order.
    """
    relay = [c for c in conditions if c["kind"] == "relay" and c["condition"] in logprobs]
    gains = {
        c["condition"]: [
            _gain(v, none, full, gain_min_nats)
            for v, none, full in zip(logprobs[c["condition"]], f_none, f_all)
        ]
        for c in relay
    }
    rows = []
    for cand in relay:
        if cand["selector"] in NOT_CANDIDATES:
            continue
        same_budget = [
            c
            for c in relay
            if c["selector"] in HEURISTICS and c["budget"] == cand["budget"] and c["gate"] == cand["gate"]
        ]
        full = [c for c in relay if c["selector"] == "full" and c["gate"] == cand["gate"]]
        refs = []
        if same_budget:
            best_lp = max(same_budget, key=lambda c: _mean_known(logprobs[c["condition"]]))
            best_gain = max(same_budget, key=lambda c: _mean_known(gains[c["condition"]]))
            refs.append(("best heuristic", best_lp, best_gain))
        if full:
            refs.append(("full transfer", full[0], None))
        nothing = [c for c in relay if c["selector"] == "none" and c["gate"] == cand["gate"]]
        if nothing:
            refs.append(("no transfer", nothing[0], None))
        for ref_name, ref_lp, ref_gain in refs:
            row = {
                "condition": cand["condition"],
                "selector": cand["selector"],
                "budget": cand["budget"],
                "gate": cand["gate"],
                "reference": ref_name,
                "reference_logprob": ref_lp["selector"],
                "gold_logprob": paired_comparison(
                    logprobs[cand["condition"]], logprobs[ref_lp["condition"]], n_boot=n_boot, seed=seed
                ),
            }
            if ref_gain is not None:
                row["reference_gain"] = ref_gain["selector"]
                row["gain_recovered"] = paired_comparison(
                    gains[cand["condition"]], gains[ref_gain["condition"]], n_boot=n_boot, seed=seed
                )
            rows.append(row)
    return rows


def _fmt_cmp(stats: Mapping | None) -> str:
    if not stats or stats["mean_diff"] is None:
        return "| | | |"
    return (
        f"| {stats['mean_diff']:+.3f} | [{stats['ci_low']:+.3f}, {stats['ci_high']:+.3f}] | "
        f"{stats['wins']}/{stats['losses']}/{stats['ties']} (n={stats['n']}) |"
    )


def paired_markdown(rows: Sequence[Mapping]) -> str:
    """The paired comparisons as one Markdown table."""
    if not rows:
        return ""
    head = (
        "| condition | vs | reference (log-prob / gain) | Δ gold log-prob | 95% CI | W/L/T "
        "| Δ gain recovered | 95% CI | W/L/T |\n|" + " --- |" * 9
    )
    lines = [head]
    for r in rows:
        ref = r["reference_logprob"] + (f" / {r['reference_gain']}" if r.get("reference_gain") else "")
        lines.append(
            f"| {r['condition']} | {r['reference']} | {ref} "
            + _fmt_cmp(r["gold_logprob"])
            + _fmt_cmp(r.get("gain_recovered"))[1:]
        )
    return "\n".join(lines)
