"""Session analyses (nineteenth session), from the raw files beside this script and committed records; seconds, no
model (measure.py made the raw files):

    python docs/results/probes19/analyze.py gate       # issue 13: the large model's verdict on its direct answer
    python docs/results/probes19/analyze.py paraphrase # issue 13: its direct answer under reworded instructions
    python docs/results/probes19/analyze.py frontier   # issue 13: the gate's exact frontier on the four Xeon samples
    python docs/results/probes19/analyze.py fresh      # issue 12: the 25 tasks by whether the small model's reasoning helps
    python docs/results/probes19/analyze.py fallback   # issue 12: a confidence-chosen transfer instead of nothing

Writes ``probes19.json`` (every table) beside this script.
"""

from __future__ import annotations

import glob
import gzip
import json
import statistics
import sys
from pathlib import Path

from selector.evaluation.paired import HEURISTICS, paired_comparison

HERE = Path(__file__).parent
DOCS = HERE.parent
XEON = {"amx_se3_stop": "latency_amx_se3", "amx_se3_rep6_stop": "latency_amx_se3_rep6",
        "amx_se3_rep7_fastest": "latency_amx_se3_rep7", "amx_se3_rep8_fastest": "latency_amx_se3_rep8"}  # fmt: skip
RELEASE = "relay:pointwise-fallback-nothing-300@0.25:small_confidence"
TAUS = [0.0, 0.3, 0.4, 0.453, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9, 1.01]


def auroc(pos: list[float], neg: list[float]) -> float:
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def _split(rows: list[dict], key: str, label: str = "correct") -> float:
    return auroc([r[key] for r in rows if r[label]], [r[key] for r in rows if not r[label]])


def gate() -> dict:
    rows = [json.loads(line) for line in (HERE / "gate_verify.jsonl").read_text().splitlines()]
    out = {}
    print(f"{'split':22s} {'n':>3s} right  AUROC: dp    verdict v1  verdict v2  dp x v2")
    for name in [*dict.fromkeys(r["set"] for r in rows), "test (four samples)"]:
        sub = [r for r in rows if r["set"] == name or (name.startswith("test") and r["set"] != "dev")]
        for r in sub:
            r["dp_v2"] = r["dp"] * r["v2"]
        out[name] = {k: _split(sub, k) for k in ("dp", "v1", "v2", "dp_v2")} | {"n": len(sub)}
        print(f"{name:22s} {len(sub):3d} {sum(r['correct'] for r in sub):5d}  " + "  ".join(
            f"{out[name][k]:.3f}     " for k in ("dp", "v1", "v2", "dp_v2")))  # fmt: skip
    return out


def paraphrase() -> dict:
    """Does the direct answer survive two reworded instructions? (the dev split and the four test samples)"""
    rows = [json.loads(line) for line in (HERE / "gate_paraphrase.jsonl").read_text().splitlines()]
    out = {}
    for name in ("dev", "test"):
        sub = [r for r in rows if (r["set"] == "dev") == (name == "dev")]
        for r in sub:
            r["agree"] = r["p1_agree"] + r["p2_agree"]  # 0, 1 or 2 rewordings give the same answer
            r["dp_agree"] = r["dp"] * (1 + r["agree"]) / 3
        out[name] = {k: _split(sub, k) for k in ("dp", "agree", "dp_agree")} | {
            "n": len(sub),
            "both_agree_right": sum(r["agree"] == 2 for r in sub if r["correct"]),
            "both_agree_wrong": sum(r["agree"] == 2 for r in sub if not r["correct"]),
            "right": sum(r["correct"] for r in sub),
        }
        o = out[name]
        print(f"{name}: {o['n']} questions ({o['right']} right); AUROC dp {o['dp']:.3f}, agreement {o['agree']:.3f}, "
              f"dp x agreement {o['dp_agree']:.3f}; both rewordings agree on {o['both_agree_right']} right and "
              f"{o['both_agree_wrong']} wrong direct answers")  # fmt: skip
    return out


def _xeon_questions() -> list[dict]:
    tp = {
        (r["sample"], r["id"]): r["tp"] for r in map(json.loads, (HERE / "transfer_confidence.jsonl").open())
    }
    qs = []
    for sample, folder in XEON.items():
        rec: dict[str, dict] = {}
        for line in (DOCS / folder / "eval_records.jsonl").read_text().splitlines():
            r = json.loads(line)
            rec.setdefault(r["condition"], {})[r["id"]] = r
        always = {
            r["id"]: r for r in map(json.loads, (HERE / f"always_{sample}.jsonl").read_text().splitlines())
        }
        live = next(f for f in glob.glob(str(DOCS / folder / "live" / "*.jsonl")) if "stop=head" in f)
        head = {r["id"]: r for r in map(json.loads, Path(live).read_text().splitlines())}
        for i, d in rec["large_direct"].items():
            own, a = rec["large_reasoning"][i], always[i]
            qs.append({"dp": d["direct_prob"], "d_ok": bool(d["correct"]), "d_lat": d["latency_s"],
                       "t_ok": bool(a["correct"]), "t_lat": d["latency_s"] + a["latency_s"], "tp": tp[(sample, i)],
                       "small_ok": bool(rec["small_reasoning"][i]["correct"]), "own_ok": bool(own["correct"]),
                       "own_lat": own["latency_s"], "live_ok": bool(head[i]["correct"])})  # fmt: skip
    return qs


def _gate_outcome(qs: list[dict], transfer: list[bool], keep_direct=lambda q: False) -> tuple[float, float]:
    own = statistics.fmean(q["own_lat"] for q in qs)
    acc = statistics.fmean(
        (q["d_ok"] if keep_direct(q) else q["t_ok"]) if t else q["d_ok"] for q, t in zip(qs, transfer)
    )
    return acc, statistics.fmean(q["t_lat"] if t else q["d_lat"] for q, t in zip(qs, transfer)) / own


def frontier() -> dict:
    qs = _xeon_questions()
    n = len(qs)
    own_acc = statistics.fmean(q["own_ok"] for q in qs)
    out = {"questions": n, "own_accuracy": own_acc, "always_transfer_accuracy": statistics.fmean(q["t_ok"] for q in qs),
           "small_alone_accuracy": statistics.fmean(q["small_ok"] for q in qs),
           "live_release_accuracy": statistics.fmean(q["live_ok"] for q in qs),
           "auroc_tp_for_transfer_right": _split(qs, "tp", "t_ok"), "taus": [], "oracle": {}}  # fmt: skip
    print(f"{n} questions (four Xeon samples): large model's own reasoning {own_acc:.1%}; the relay transferring every "
          f"question {out['always_transfer_accuracy']:.1%}; the small model alone {out['small_alone_accuracy']:.1%}")  # fmt: skip
    print(
        "tau    transferred  accuracy  latency / own   (+ keep the direct answer where the large model is surer of it)"
    )
    for tau in TAUS:
        transfer = [q["dp"] < tau for q in qs]
        acc, ratio = _gate_outcome(qs, transfer)
        acc_max, _ = _gate_outcome(qs, transfer, keep_direct=lambda q: q["dp"] > q["tp"])
        out["taus"].append({"tau": tau, "transfer": sum(transfer) / n, "accuracy": acc, "ratio": ratio,
                            "accuracy_surer": acc_max})  # fmt: skip
        print(f"{tau:5.3f}  {sum(transfer) / n:10.1%}  {acc:8.1%}  {ratio:13.3f}   {acc_max:.1%}")
    # an oracle gate: transfer first the questions the transfer fixes, then the ones it leaves right
    order = sorted(range(n), key=lambda k: -(qs[k]["t_ok"] - qs[k]["d_ok"]))
    for share in (0.2, 0.3, 0.4, 0.5):
        chosen = set(order[: round(share * n)])
        acc, ratio = _gate_outcome(qs, [k in chosen for k in range(n)])
        out["oracle"][str(share)] = {"accuracy": acc, "ratio": ratio}
        print(f"oracle gate, {share:.0%} transferred: {acc:.1%} at {ratio:.3f}")
    print(
        f"AUROC of the large model's confidence after the transfer for 'the transfer is right': "
        f"{out['auroc_tp_for_transfer_right']:.3f}"
    )
    return out


def _task_rows(folder: Path) -> dict[str, dict[str, dict]]:
    rows: dict[str, dict[str, dict]] = {}
    with gzip.open(folder / "records.jsonl.gz", "rt") as lines:
        for r in map(json.loads, lines):
            rows.setdefault(r["condition"], {})[r["id"]] = r
    return rows


def _tasks() -> list[Path]:
    root = DOCS / "selector_multitask5"
    return sorted(p for p in root.iterdir() if (p / "records.jsonl.gz").exists())


def fresh() -> dict:
    """Per task: does the full reasoning help (>= 1 nat on >= a quarter of problems: the issue's qualifying rule),
    does the release send anything, and where does it stand against the best heuristic."""
    out = {}
    print("task                     full helps (>=1 nat) hurts  qualifies  release sent  vs best heuristic")
    for folder in _tasks():
        rows = _task_rows(folder)
        ids = sorted(rows[RELEASE])
        diff = [
            rows["relay:full:always"][i]["gold_logprob"] - rows["relay:none:always"][i]["gold_logprob"]
            for i in ids
        ]
        glp = {
            h: [rows[f"relay:{h}@0.25:small_confidence"][i]["gold_logprob"] for i in ids] for h in HEURISTICS
        }
        best = max(HEURISTICS, key=lambda h: sum(glp[h]))
        cmp = paired_comparison([rows[RELEASE][i]["gold_logprob"] for i in ids], glp[best])
        helps = sum(d >= 1 for d in diff)
        row = {"helps": helps, "hurts": sum(d <= -1 for d in diff), "qualifies": helps >= len(ids) / 4,
               "sent": sum(rows[RELEASE][i]["transfer_tokens"] > 0 for i in ids), "best": best, "vs_best": cmp}  # fmt: skip
        out[folder.name] = row
        print(f"{folder.name:24s} {helps:4d}/{len(ids)}  {row['hurts']:12d}  {'yes' if row['qualifies'] else '':9s}  "
              f"{row['sent']:5d}/{len(ids)}   {cmp['mean_diff']:+.2f} [{cmp['ci_low']:+.2f}, {cmp['ci_high']:+.2f}] ({best})")  # fmt: skip
    return out


def fallback() -> dict:
    """Where the release sends nothing although the gate transfers: choose among candidate transfers by the large
    model's confidence in the answer each one gives (gold-free; one prefill per candidate)."""
    with gzip.open(HERE / "fallback_confidence.jsonl.gz", "rt") as lines:
        scored = {(r["task"], r["id"]): r for r in map(json.loads, lines)}
    policies = {"release (nothing)": None, "{none, first}": ["none", "first"], "{none, selfinfo}": ["none", "selfinfo"],
                "{none, first, last, selfinfo, random}": ["none", "first", "last", "selfinfo", "random"]}  # fmt: skip
    pooled = {p: ([], []) for p in policies}
    per_task = {p: {"wins": [], "losses": [], "accuracy": 0, "leakage": 0} for p in policies}
    for folder in _tasks():
        rows = _task_rows(folder)
        ids = sorted(rows[RELEASE])
        glp = {
            h: [rows[f"relay:{h}@0.25:small_confidence"][i]["gold_logprob"] for i in ids] for h in HEURISTICS
        }
        best = max(HEURISTICS, key=lambda h: sum(glp[h]))
        for policy, cands in policies.items():
            values = []
            for i in ids:
                rel, s = rows[RELEASE][i], scored.get((folder.name, i))
                if cands is None or s is None:
                    values.append(rel["gold_logprob"])
                    per_task[policy]["accuracy"] += bool(rel["correct"])
                    per_task[policy]["leakage"] += bool(rel["leaked"])
                    continue
                pick = s[max(cands, key=lambda h: s[h]["conf"])]
                values.append(pick["gold"])
                per_task[policy]["accuracy"] += pick["correct"]
                per_task[policy]["leakage"] += bool(pick.get("leaked"))
            cmp = paired_comparison(values, glp[best])
            pooled[policy][0].extend(values)
            pooled[policy][1].extend(glp[best])
            if cmp["ci_low"] > 0:
                per_task[policy]["wins"].append(folder.name)
            if cmp["ci_high"] < 0:
                per_task[policy]["losses"].append(folder.name)
    out = {}
    print(f"{len(scored)} problems scored; per policy, pooled vs the per-task best heuristic (800 problems):")
    for policy in policies:
        cmp = paired_comparison(*pooled[policy])
        out[policy] = {"pooled": cmp, **per_task[policy]}
        print(f"{policy:40s} {cmp['mean_diff']:+.3f} [{cmp['ci_low']:+.3f}, {cmp['ci_high']:+.3f}]  wins "
              f"{len(per_task[policy]['wins']):2d}  losses {per_task[policy]['losses']}  accuracy "
              f"{per_task[policy]['accuracy']}/800 leakage {per_task[policy]['leakage']}")  # fmt: skip
    return out


def main(argv: list[str]) -> None:
    parts = {
        "gate": gate,
        "paraphrase": paraphrase,
        "frontier": frontier,
        "fresh": fresh,
        "fallback": fallback,
    }
    chosen = argv or list(parts)
    if any(a not in parts for a in chosen):
        raise SystemExit(__doc__)
    path = HERE / "probes19.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    for name in chosen:
        print(f"\n== {name}")
        saved[name] = parts[name]()
    path.write_text(json.dumps(saved, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
