"""Session analysis (twentieth session, issue 12), post hoc on the committed records of the 25 tasks' evaluations
(docs/results/selector_multitask5/*/records.jsonl.gz; no model runs, seconds):

    python docs/results/probes20/fallback_crossfit.py                 # the 25 tasks; writes fallback_crossfit.json
    python docs/results/probes20/fallback_crossfit.py --root FOLDER --release NAME --out F   # any evaluation folders

The release sends nothing from a trace its novelty model flags, which wins on the fresh tasks where the small model's
reasoning misleads and loses on the four where a heuristic's 25% helps (count_bits, count_primes, prime_factorization,
power_function). No gold-free signal tells the two apart (seventeenth and nineteenth sessions). A user meeting a new
task has something else, though: `tokenrelay calibrate` already needs a dev split with gold answers to set the gate.
So: choose the fallback (nothing, or a heuristic's 25%, read from that heuristic's own row of the same evaluation) on
one half of a task's problems by mean gold log-prob, apply it to the other half, and compare each problem with the
best heuristic chosen with hindsight on all 32 (the comparison the acceptance uses; 20 random halvings, both
directions, each problem's value averaged over the halvings where it was tested). ``--dev-share 0.25``: the choice
is made on 8 problems and applied to the other 24 (20 random draws).

Caveat, said before it ran: the candidate set {nothing, first} was picked after the seventeenth session's table showed
`first` the best single fallback, so this is a pointer for the next experiment (a calibrated fallback validated on
fresh tasks), not evidence for a release. ``--root``: a folder of evaluation folders (each with records.jsonl or
records.jsonl.gz; ``tokenrelay eval`` writes them), ``--release``: the release's selector name in their conditions.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from pathlib import Path

from selector.evaluation.paired import HEURISTICS, paired_comparison

HERE = Path(__file__).parent
ROOT = HERE.parent / "selector_multitask5"
RELEASE = "pointwise-fallback-nothing-300"
GATE = "small_confidence"
CANDIDATES = {"nothing|first": ("nothing", "first"), "nothing|any heuristic": ("nothing", *HEURISTICS)}


def load(task_dir: Path) -> dict[str, dict[str, dict]]:
    rows: dict[str, dict[str, dict]] = {}
    path = task_dir / "records.jsonl.gz"
    with gzip.open(path, "rt") if path.exists() else open(task_dir / "records.jsonl") as lines:
        for line in lines:
            r = json.loads(line)
            rows.setdefault(r["condition"], {})[r["id"]] = r
    return rows


def crossfit(
    rows: dict, release_name: str, options: tuple[str, ...], dev_share: float, draws: int, seed: int
) -> dict:
    """Per problem, the gold log-prob of the fallback chosen on the dev problems of each draw it was tested in."""
    release = rows[f"relay:{release_name}@0.25:{GATE}"]
    heur = {h: rows[f"relay:{h}@0.25:{GATE}"] for h in HEURISTICS}
    ids = sorted(release)

    def value(option: str, i: str) -> float:
        if option == "nothing" or not release[i]["selector_fallback"]:
            return release[i]["gold_logprob"]
        return heur[option][i]["gold_logprob"]

    rng = random.Random(seed)
    tested: dict[str, list[float]] = {i: [] for i in ids}
    chosen: dict[str, int] = {}
    for _ in range(draws):
        order = ids[:]
        rng.shuffle(order)
        k = round(len(order) * dev_share)
        splits = [(order[:k], order[k:])]
        if dev_share == 0.5:
            splits.append((order[k:], order[:k]))
        for dev, test in splits:
            pick = max(options, key=lambda o: sum(value(o, i) for i in dev))
            chosen[pick] = chosen.get(pick, 0) + 1
            for i in test:
                tested[i].append(value(pick, i))
    best = max(HEURISTICS, key=lambda h: sum(heur[h][i]["gold_logprob"] for i in ids))
    ids = [i for i in ids if tested[i]]
    return {
        "variant": [sum(tested[i]) / len(tested[i]) for i in ids],
        "best": [heur[best][i]["gold_logprob"] for i in ids],
        "full": [rows[f"relay:full:{GATE}"][i]["gold_logprob"] for i in ids],
        "release": [release[i]["gold_logprob"] for i in ids],
        "best_name": best,
        "chosen": chosen,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--draws", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--root", type=Path, default=ROOT, help="a folder of evaluation folders, one per task")
    p.add_argument(
        "--release", default=RELEASE, help="the release's selector name in the records' conditions"
    )
    p.add_argument("--out", type=Path, default=HERE / "fallback_crossfit.json")
    args = p.parse_args()
    tasks = {
        d.name: load(d)
        for d in sorted(args.root.iterdir())
        if (d / "records.jsonl.gz").exists() or (d / "records.jsonl").exists()
    }
    out: dict = {}
    for dev_share in (0.5, 0.25):
        for name, options in CANDIDATES.items():
            key = f"{name} on {dev_share:.0%} of problems"
            pooled = {"variant": [], "best": [], "full": [], "release": []}
            per_task = {}
            for task, rows in tasks.items():
                r = crossfit(rows, args.release, options, dev_share, args.draws, args.seed)
                for side in pooled:
                    pooled[side].extend(r[side])
                per_task[task] = {
                    "vs_best": paired_comparison(r["variant"], r["best"]),
                    "release_vs_best": paired_comparison(r["release"], r["best"]),
                    "vs_full": paired_comparison(r["variant"], r["full"]),
                    "release_vs_full": paired_comparison(r["release"], r["full"]),
                    "best": r["best_name"],
                    "chosen": r["chosen"],
                }
            out[key] = {
                "pooled_vs_best": paired_comparison(pooled["variant"], pooled["best"]),
                "pooled_release_vs_best": paired_comparison(pooled["release"], pooled["best"]),
                "won": sorted(t for t, v in per_task.items() if v["vs_best"]["ci_low"] > 0),
                "lost": sorted(t for t, v in per_task.items() if v["vs_best"]["ci_high"] < 0),
                "below_full": sorted(t for t, v in per_task.items() if v["vs_full"]["ci_high"] < 0),
                "release_below_full": sorted(
                    t for t, v in per_task.items() if v["release_vs_full"]["ci_high"] < 0
                ),
                "per_task": per_task,
            }
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{'fallback chosen on a dev share':44s} {'pooled vs best heuristic':>26s}  won  lost")
    for key, v in out.items():
        s, r = v["pooled_vs_best"], v["pooled_release_vs_best"]
        print(
            f"{key:44s} {s['mean_diff']:+.3f} [{s['ci_low']:+.3f}, {s['ci_high']:+.3f}]  {len(v['won']):3d}  "
            f"{len(v['lost']):3d} {v['lost']}  below full: {v['below_full']} (release: {v['release_below_full']})  "
            f"(release on the same problems {r['mean_diff']:+.3f})"
        )


if __name__ == "__main__":
    main()
