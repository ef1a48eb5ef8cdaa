"""Session analysis (seventeenth session), post hoc on the committed records of the 25 tasks' evaluations
(docs/results/selector_multitask5/*/records.jsonl.gz; no model runs):

    python docs/results/selector_posthoc17/analyze.py

1. ``fallback``: the release sends nothing from a trace its novelty model flags. What if it sent a heuristic's 25%
   instead (first / last / random / selfinfo, each read from its own row of the same evaluation)? Per task, against
   the best heuristic of the same problems, with a bootstrap interval.
2. ``crossfit``: is the release's loss on four tasks an artefact of choosing the best heuristic with hindsight on the
   same 32 problems (the maximum of four noisy means is biased upward)? The heuristic is chosen on one half of a
   task's problems and compared on the other half (20 random halvings, both directions, averaged per problem).

Writes posthoc.json beside this file. Gate: small_confidence; budget 25%; the release = the pointwise hidden
selector with the novelty fallback (checkpoints/qwen2.5-coder-0.5b-to-1.5b-multitask-pointwise-fallback).
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

from selector.evaluation.paired import HEURISTICS, paired_comparison

HERE = Path(__file__).parent
ROOT = HERE.parent / "selector_multitask5"
RELEASE = "pointwise-fallback-nothing-300"
GATE = "small_confidence"


def load(task_dir: Path) -> tuple[dict, dict, list[str]]:
    rows: dict[str, dict] = {}
    with gzip.open(task_dir / "records.jsonl.gz", "rt") as lines:
        for line in lines:
            r = json.loads(line)
            rows.setdefault(r["condition"], {})[r["id"]] = r
    release = rows[f"relay:{RELEASE}@0.25:{GATE}"]
    heur = {h: rows[f"relay:{h}@0.25:{GATE}"] for h in HEURISTICS}
    return release, heur, sorted(release)


def main() -> None:
    out: dict = {"fallback": {}, "crossfit": {}}
    # each side of every comparison, pooled over tasks: (the variant's gold log-probs, the heuristic's)
    pooled: dict[str, tuple[list, list]] = {
        k: ([], []) for k in ["release", *(f"fallback={h}" for h in HEURISTICS)]
    }
    pooled_cf: tuple[list, list] = ([], [])
    for task_dir in sorted(p for p in ROOT.iterdir() if (p / "records.jsonl.gz").exists()):
        release, heur, ids = load(task_dir)
        glp = {h: {i: heur[h][i]["gold_logprob"] for i in ids} for h in HEURISTICS}
        best = max(HEURISTICS, key=lambda h: sum(glp[h].values()))
        flagged = [i for i in ids if release[i]["selector_fallback"]]
        task = {"best": best, "flagged": len(flagged), "problems": len(ids)}
        variants = {"release": {i: release[i]["gold_logprob"] for i in ids}}
        for h in HEURISTICS:
            variants[f"fallback={h}"] = {
                i: glp[h][i] if release[i]["selector_fallback"] else release[i]["gold_logprob"] for i in ids
            }
        for name, values in variants.items():
            a, b = [values[i] for i in ids], [glp[best][i] for i in ids]
            task[name] = paired_comparison(a, b)
            pooled[name][0].extend(a)
            pooled[name][1].extend(b)
        out["fallback"][task_dir.name] = task

        rng = random.Random(1)
        per_problem: dict[str, list[float]] = {i: [] for i in ids}
        for _ in range(20):
            order = ids[:]
            rng.shuffle(order)
            half = len(order) // 2
            for train, test in ((order[:half], order[half:]), (order[half:], order[:half])):
                chosen = max(HEURISTICS, key=lambda h: sum(glp[h][i] for i in train))
                for i in test:
                    per_problem[i].append(glp[chosen][i])
        a = [release[i]["gold_logprob"] for i in ids]
        b = [sum(per_problem[i]) / len(per_problem[i]) for i in ids]  # the heuristic the other halves chose
        pooled_cf[0].extend(a)
        pooled_cf[1].extend(b)
        out["crossfit"][task_dir.name] = {
            "hindsight": task["release"],
            "crossfitted": paired_comparison(a, b),
        }

    out["fallback_pooled"] = {k: paired_comparison(*v) for k, v in pooled.items()}
    out["fallback_losses"] = {
        k: sorted(t for t, row in out["fallback"].items() if row[k]["ci_high"] < 0) for k in pooled
    }
    out["fallback_wins"] = {
        k: sorted(t for t, row in out["fallback"].items() if row[k]["ci_low"] > 0) for k in pooled
    }
    out["crossfit_pooled"] = paired_comparison(*pooled_cf)
    out["crossfit_losses"] = sorted(
        t for t, row in out["crossfit"].items() if row["crossfitted"]["ci_high"] < 0
    )
    (HERE / "posthoc.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"{'variant':22s} {'pooled vs best (800)':>28s}  wins  losses")
    for k, s in out["fallback_pooled"].items():
        print(
            f"{k:22s} {s['mean_diff']:+.3f} [{s['ci_low']:+.3f}, {s['ci_high']:+.3f}]      "
            f"{len(out['fallback_wins'][k]):3d}  {len(out['fallback_losses'][k]):3d} {out['fallback_losses'][k]}"
        )
    s = out["crossfit_pooled"]
    print(
        f"cross-fitted heuristic: pooled {s['mean_diff']:+.3f} [{s['ci_low']:+.3f}, {s['ci_high']:+.3f}], losses {out['crossfit_losses']}"
    )


if __name__ == "__main__":
    main()
