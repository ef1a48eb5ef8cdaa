"""What the simple baselines recover of the labels, on the same validation splits a selector is scored on.

    python -m scripts.label_baselines --labels runs/real/labels --val-fraction 0.2 --seeds 0,1,2,3,4

For each split seed, the validation traces are the ones ``tokenrelay train --data.val_fraction F
--data.split_seed S`` holds out (split by id hash); each baseline (first / last / random sentences,
and the labels themselves as the oracle) keeps units within the token budget, and is scored with
the labels' linear surrogate f(S) ≈ f(∅) + Σ labels of S, exactly as the training module's
``val/gain_recovered@b`` and ``val/gain@b`` score a trained selector. So the selector's validation
figures of a loss / head / backbone ablation can be set beside these without another large-model
pass. Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import random
import statistics

from selector.io import write_json_atomic
from selector.selection import Budget, select_units
from selector.shards import read_records
from training.datamodule import split_of

BASELINES = {
    "first": lambda labels, rng: [-float(i) for i in range(len(labels))],
    "last": lambda labels, rng: [float(i) for i in range(len(labels))],
    "random": lambda labels, rng: [rng.random() for _ in labels],
    "oracle": lambda labels, rng: list(labels),
}


def surrogate_gains(records: list[dict], scorer, budget: float, min_gain: float, seed: int = 0) -> dict:
    """gain recovered (Σ kept labels / Σ full gain over traces the full transfer helps) and mean gain."""
    rng = random.Random(seed)
    kept_helped = full_helped = total = 0.0
    for r in records:
        labels = [float(x) for x in r["labels"]]
        keep = select_units(scorer(labels, rng), r["unit_token_counts"], Budget.ratio(budget))
        gain = sum(y for y, k in zip(labels, keep) if k)
        total += gain
        full = r["f_all"] - r["f_none"]
        if full > min_gain:
            kept_helped, full_helped = kept_helped + gain, full_helped + full
    return {
        "gain_recovered": kept_helped / full_helped if full_helped > 0 else None,
        "mean_gain": total / len(records) if records else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.label_baselines", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--labels", required=True, help="a `tokenrelay label` output folder")
    parser.add_argument(
        "--val-fraction", type=float, default=0.2, help="as --data.val_fraction of tokenrelay train"
    )
    parser.add_argument("--seeds", default="0", help="comma-separated split seeds (--data.split_seed)")
    parser.add_argument("--budget", type=float, default=0.25, help="share of the reasoning's tokens kept")
    parser.add_argument(
        "--min-gain", type=float, default=0.1, help="as model.min_gain: traces counted as helped"
    )
    parser.add_argument("--out", default=None, help="JSON file for the table")
    args = parser.parse_args(argv)
    if not 0 < args.val_fraction < 1:
        parser.error(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    if not 0 < args.budget <= 1:
        parser.error(f"--budget must be in (0, 1], got {args.budget}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    records = [r for r in read_records(args.labels).to_list() if r.get("labels")]
    rows = {}
    for name, scorer in BASELINES.items():
        per_split = []
        for s in seeds:
            val = [r for r in records if split_of(str(r["id"]), args.val_fraction, s) == "val"]
            if not val:
                parser.error(f"split seed {s} holds out no trace of {len(records)}")
            per_split.append(surrogate_gains(val, scorer, args.budget, args.min_gain, seed=s))
        rows[name] = {
            key: statistics.fmean(p[key] for p in per_split if p[key] is not None) for key in per_split[0]
        }
    print(
        f"{len(records)} labelled traces, {len(seeds)} split(s) of {args.val_fraction:g}, budget {args.budget:g}"
    )
    print(f"{'baseline':<10} {'gain recovered':>15} {'mean gain (nats)':>17}")
    for name, row in rows.items():
        print(f"{name:<10} {row['gain_recovered']:>15.3f} {row['mean_gain']:>17.3f}")
    if args.out:
        write_json_atomic(args.out, {"config": vars(args), "rows": rows})
        print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
