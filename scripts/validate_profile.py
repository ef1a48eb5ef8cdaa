"""Check `tokenrelay profile`'s cost models against latencies measured on the real models.

    tokenrelay profile --config configs/profile.yaml --out runs/profile     # random weights, real shapes
    tokenrelay eval --config configs/eval.yaml --batch-size 1 --out runs/eval  # the real pair
    python -m scripts.validate_profile --profile runs/profile --eval runs/eval

For every question of every condition in ``EVAL/records.jsonl`` the cost models predict each stage
from the token counts the real run had (prompt tokens in, tokens generated), and the prediction is
set beside the measured wall time: per stage and per condition's end-to-end latency, the mean
predicted / mean measured seconds, and the share of questions predicted within +-20%.
Stage times must be per question: evaluate with ``--batch-size 1``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from selector.io import write_json_atomic
from selector.profiler import CostModel

# stage name -> (which model, what the stage's StageStats counts)
STAGE_MODELS = {
    "large_direct": "large",  # prefill + the answer's decode
    "small_reasoning": "small",  # prefill + the reasoning's decode
    "large_prefill": "large",  # prefill (and first token) of a transfer prompt or own reasoning
    "large_decode": "large",  # the remaining tokens
}
TOLERANCE = 0.2


def predict_stage(name: str, stats: dict, costs: dict[str, CostModel]) -> float:
    """Seconds the cost model predicts for one stage of one question, from its token counts."""
    cost = costs[STAGE_MODELS[name]]
    if name == "large_prefill":
        return cost.prefill(stats["prompt_tokens"])
    # The first token comes with the prefill, the rest are decode steps, plus one step for the
    # end-of-sequence token: the measured time includes it, the token counts do not (a generation
    # cut at its cap is over-predicted by that one step).
    if name == "large_decode":
        return cost.decode(stats["new_tokens"] + 1)
    return cost.prefill(stats["prompt_tokens"]) + cost.decode(stats["new_tokens"])


def compare(records: list[dict], costs: dict[str, CostModel]) -> dict:
    """Per stage and per condition: mean predicted, mean measured, their ratio, share within 20%."""
    per_stage: dict[str, list[tuple[float, float]]] = {}
    per_condition: dict[str, list[tuple[float, float]]] = {}
    seen: set[tuple[str, str, float]] = set()
    for rec in records:
        total_pred = total_meas = 0.0
        for name, stats in (rec.get("stages") or {}).items():
            if name not in STAGE_MODELS:
                continue  # selection: the selector, not a model
            pred = predict_stage(name, stats, costs)
            total_pred += pred
            total_meas += stats["seconds"]
            key = (rec["id"], name, stats["seconds"])
            if key not in seen:  # a cached stage shared by several conditions counts once
                seen.add(key)
                per_stage.setdefault(name, []).append((pred, stats["seconds"]))
        if total_meas > 0:
            per_condition.setdefault(rec["condition"], []).append((total_pred, total_meas))

    def summary(pairs: list[tuple[float, float]]) -> dict:
        pred = statistics.fmean(p for p, _ in pairs)
        meas = statistics.fmean(m for _, m in pairs)
        return {
            "n": len(pairs),
            "predicted_s": pred,
            "measured_s": meas,
            "ratio": pred / meas if meas else None,
            "within_20pct": statistics.fmean(abs(p - m) <= TOLERANCE * m for p, m in pairs),
        }

    return {
        "stages": {k: summary(v) for k, v in per_stage.items()},
        "conditions": {k: summary(v) for k, v in per_condition.items()},
    }


def table(result: dict) -> str:
    lines = [
        "| what | n | predicted s (mean) | measured s (mean) | predicted / measured | questions within 20% |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for group in ("stages", "conditions"):
        for name, r in result[group].items():
            lines.append(
                f"| {group[:-1]} {name} | {r['n']} | {r['predicted_s']:.2f} | {r['measured_s']:.2f} "
                f"| {r['ratio']:.2f} | {r['within_20pct']:.0%} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", required=True, help="tokenrelay profile output (cost_small/large.json)")
    parser.add_argument("--eval", required=True, help="tokenrelay eval output (records.jsonl), batch size 1")
    parser.add_argument("--out", help="JSON file for the comparison (default: PROFILE/validation.json)")
    args = parser.parse_args(argv)
    profile, run = Path(args.profile), Path(args.eval)
    missing = [
        p
        for p in (profile / "cost_small.json", profile / "cost_large.json", run / "records.jsonl")
        if not p.exists()
    ]
    if missing:
        parser.error(f"missing {', '.join(map(str, missing))}")
    costs = {role: CostModel.load(profile / f"cost_{role}.json") for role in ("small", "large")}
    records = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines() if line.strip()]
    result = compare(records, costs)
    result["costs"] = {k: vars(v) for k, v in costs.items()}
    out = Path(args.out) if args.out else profile / "validation.json"
    write_json_atomic(out, result)
    print(table(result))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
