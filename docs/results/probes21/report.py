"""Phase E: the set-value selector (leave one task out) against the best heuristic, the full transfer and the
release, per task and pooled; small_confidence gate (and always, where recorded), 25%."""

import os

import numpy as np
from common import WORK, fmt, read_json, records_by_id, release_key, write_json

from selector.evaluation.paired import paired_comparison

scored = read_json(os.environ.get("SCORED", str(WORK / "scored.json")))
HEUR = ["first", "last", "random", "selfinfo"]


def table(gate):
    rows, pooled = [], {k: [] for k in ["new", "full", "rel", "none", *HEUR]}
    acc_pool = []
    for folder in sorted(scored):
        by = records_by_id(folder)

        def key(s):
            return f"relay:{s}@0.25:{gate}" if s in HEUR else f"relay:{s}:{gate}"

        relk = release_key(next(iter(by.values())), gate)
        if not relk or key("first") not in next(iter(by.values())):
            continue
        ids = sorted(by)
        vals = {k: [] for k in pooled}
        acc, leak = [], []
        for pid in ids:
            c = by[pid]
            path = c[key("first")]["path"]
            for h in [*HEUR, "full", "none"]:
                vals[h].append(c[key(h)]["gold_logprob"])
            vals["rel"].append(c[relk]["gold_logprob"])
            if path == "direct":
                v = c[key("first")]
                vals["new"].append(v["gold_logprob"])
                acc.append(v["correct"])
                leak.append(False)
            elif pid in scored[folder]:
                e = scored[folder][pid]
                vals["new"].append(e["gold_logprob"])
                acc.append(e["correct"])
                leak.append(e["leaked"])
            else:  # no units: every transfer is empty
                v = c[key("none")]
                vals["new"].append(v["gold_logprob"])
                acc.append(v["correct"])
                leak.append(False)
        means = {h: np.mean(vals[h]) for h in HEUR}
        best = max(HEUR, key=lambda h: means[h])
        for k in pooled:
            pooled[k].extend(vals[k])
        acc_pool.extend(acc)
        sent = np.mean([scored[folder][p]["sent"] if p in scored[folder] else False for p in ids])
        rows.append(
            dict(
                task=folder,
                n=len(ids),
                best=best,
                new=float(np.mean(vals["new"])),
                acc=float(np.mean([bool(a) for a in acc])),
                leak=float(np.mean(leak)),
                sent=float(sent),
                vs_best=paired_comparison(vals["new"], vals[best]),
                vs_full=paired_comparison(vals["new"], vals["full"]),
                vs_rel=paired_comparison(vals["new"], vals["rel"]),
                rel_vs_best=paired_comparison(vals["rel"], vals[best]),
            )
        )
    means = {h: np.mean(pooled[h]) for h in HEUR}
    best = max(HEUR, key=lambda h: means[h])
    pool = dict(
        task="pooled",
        n=len(pooled["new"]),
        best=best,
        new=float(np.mean(pooled["new"])),
        acc=float(np.mean([bool(a) for a in acc_pool])),
        leak=None,
        sent=None,
        vs_best=paired_comparison(pooled["new"], pooled[best]),
        vs_full=paired_comparison(pooled["new"], pooled["full"]),
        vs_rel=paired_comparison(pooled["new"], pooled["rel"]),
        rel_vs_best=paired_comparison(pooled["rel"], pooled[best]),
    )
    return rows, pool


def main():
    out = {}
    for gate in ("small_confidence", "always"):
        rows, pool = table(gate)
        out[gate] = {"rows": rows, "pooled": pool}
        print(f"\n### gate {gate}: set-value selector, held-out tasks or problems, 25%\n")
        print(
            "| task | n | sent any | accuracy | leakage | gold log-prob | vs best heuristic (which) | vs full transfer | vs release | release vs best |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in [*rows, pool]:
            cells = [
                r["task"],
                r["n"],
                "-" if r["sent"] is None else f"{100 * r['sent']:.0f}%",
                f"{100 * r['acc']:.1f}%",
                "-" if r["leak"] is None else f"{100 * r['leak']:.1f}%",
                f"{r['new']:.2f}",
                f"{fmt(r['vs_best'])} ({r['best']})",
                fmt(r["vs_full"]),
                fmt(r["vs_rel"]),
                fmt(r["rel_vs_best"]),
            ]
            print("| " + " | ".join(map(str, cells)) + " |")
        won = [r["task"] for r in rows if r["vs_best"]["ci_low"] > 0]
        lost = [r["task"] for r in rows if r["vs_best"]["ci_high"] < 0]
        below_full = [r["task"] for r in rows if r["vs_full"]["mean_diff"] < 0]
        print(
            f"\nwon {len(won)}: {won}\nlost {len(lost)}: {lost}\nmean below full on {len(below_full)}: {below_full}"
        )
    write_json(os.environ.get("REPORT", str(WORK / "report.json")), out, indent=1)


if __name__ == "__main__":
    main()
