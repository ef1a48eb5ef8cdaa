"""One table for several `tokenrelay eval` runs (one per task): each trained selector against the best
heuristic, per task and pooled over every problem, with paired statistics.

    python -m scripts.summarize_evals se3=runs/eval_se3 geometry=runs/eval_geo coin=runs/eval_coin \\
        --out docs/results/selector_tasks/summary

Per run it reads ``results.json`` (condition rows) and ``records.jsonl`` (per-problem gold log-prob,
correctness and leakage) and reports, for every trained selector at each budget and gate: accuracy,
leakage, mean gold log-prob, and the paired comparison (mean per-problem difference, bootstrap 95%
interval, wins/losses/ties, n) of gold log-prob and of gain recovered against the best heuristic at
the same budget and gate. The pooled row joins every run's problems and chooses the best heuristic
again on them (a choice made with hindsight, which favours the heuristic). Where the runs hold the
small model's own answers (the small_reasoning condition), it also splits every ungated relay's gold
log-prob by whether the small model was right, and says how well the small model's confidence in its
stated answer (``small_prob``, what the small_confidence gate reads) tells right from wrong (AUROC).
Each row also says on how many problems *any* condition of the run (large direct, the small model's own
reasoning, any relay) gave the right answer: where that is near zero, no condition reaches an answer and the
differences in gold log-prob are about how near a wrong answer the large model lands, not about answers.
Each row says whether its task *qualifies* (the small model's full reasoning raises the large model's gold
log-prob by at least ``gain_min_nats`` on at least a quarter of its problems: a task where reasoning is worth
transferring) and on what share of problems the condition sent any unit at all (a selector that abstains on an
unfamiliar task wins only where transferring hurts); a second pooled row joins the qualifying tasks alone.
Writes summary.md and summary.json into ``--out``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from selector.evaluation.paired import HEURISTICS, NOT_CANDIDATES, paired_comparison, paired_vs_references
from selector.io import write_json_atomic

QUALIFYING_SHARE = 0.25
"""A task qualifies when the full reasoning helps (by gain_min_nats) on at least this share of its problems."""


def load_run(path: Path) -> tuple[dict, dict[str, list[dict]]]:
    """``results.json`` and the per-problem records grouped by condition (in problem order).

    The records may be gzipped (``records.jsonl.gz``, as the folders under docs/results keep them)."""
    results_file, records_file = path / "results.json", path / "records.jsonl"
    if not records_file.is_file() and (path / "records.jsonl.gz").is_file():
        records_file = path / "records.jsonl.gz"
    for f in (results_file, records_file):
        if not f.is_file():
            raise SystemExit(f"{path}: no {f.name} (not a finished `tokenrelay eval` output folder)")
    result = json.loads(results_file.read_text())
    by_condition: dict[str, list[dict]] = defaultdict(list)
    opener = gzip.open if records_file.suffix == ".gz" else open
    with opener(records_file, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rec = json.loads(line)
                by_condition[rec["condition"]].append(rec)
    return result, dict(by_condition)


def _mean(values) -> float | None:
    known = [float(v) for v in values if v is not None]
    return statistics.fmean(known) if known else None


def _median(values) -> float | None:
    known = list(values)
    return statistics.median(known) if known else None


def _paired(rows: list[dict], records: dict[str, list[dict]], gain_min_nats: float) -> list[dict]:
    conditions = [r for r in rows if r["condition"] in records]
    first = records[conditions[0]["condition"]]
    return paired_vs_references(
        conditions,
        {c["condition"]: [r.get("gold_logprob") for r in records[c["condition"]]] for c in conditions},
        [r["f_none"] for r in first],
        [r.get("f_all") for r in first],
        gain_min_nats=gain_min_nats,
    )


def answered_by_any(records: dict[str, list[dict]]) -> int:
    """How many problems at least one condition answered right (0: no condition reaches an answer)."""
    return len({r.get("id") for recs in records.values() for r in recs if r.get("correct")})


def auroc(scores: list[float], positive: list[bool]) -> float | None:
    """P(a positive's score > a negative's), ties half: None without both classes."""
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    if not pos or not neg:
        return None
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def by_small_model(
    task: str, rows: list[dict], records: dict[str, list[dict]]
) -> tuple[list[dict], dict | None]:
    """Ungated relays' gold log-prob where the small model was right / wrong, and its confidence's AUROC."""
    own = records.get("small_reasoning")
    if not own:
        return [], None
    right = [bool(r.get("correct")) for r in own]
    ungated = [row for row in rows if row["kind"] == "relay" and row["gate"] == "always"]
    split = []
    for row in ungated:
        lps = [r.get("gold_logprob") for r in records[row["condition"]]]
        empty = [
            r.get("transfer_tokens") == 0 if "transfer_tokens" in r else None
            for r in records[row["condition"]]
        ]
        split.append(
            {
                "task": task,
                "condition": row["condition"],
                "n_right": sum(right),
                "n_wrong": len(right) - sum(right),
                "logprob_right": _mean(lp for lp, ok in zip(lps, right) if ok),
                "logprob_wrong": _mean(lp for lp, ok in zip(lps, right) if not ok),
                # share of problems where the relay sent no reasoning (a floored selector can decide that)
                "sent_nothing_right": _mean(e for e, ok in zip(empty, right) if ok),
                "sent_nothing_wrong": _mean(e for e, ok in zip(empty, right) if not ok),
            }
        )
    first = records[ungated[0]["condition"]] if ungated else []
    if not any("small_prob" in r for r in first):
        return split, None
    probs = [r.get("small_prob") or 0.0 for r in first]  # no stated answer: not sure at all
    return split, {
        "task": task,
        "auroc": auroc(probs, right),
        "n_right": sum(right),
        "n_wrong": len(right) - sum(right),
        "median_prob_right": _median(p for p, ok in zip(probs, right) if ok),
        "median_prob_wrong": _median(p for p, ok in zip(probs, right) if not ok),
    }


def summarize(runs: dict[str, Path]) -> dict:
    """Per-task and pooled rows for every trained selector condition found in all runs."""
    loaded = {name: load_run(path) for name, path in runs.items()}
    gain_min = {r["gain_min_nats"] for r, _ in loaded.values()}
    if len(gain_min) != 1:
        raise SystemExit(f"the runs use different gain_min_nats {sorted(gain_min)}: summarize like with like")
    gain_min_nats = gain_min.pop()
    common = set.intersection(*({row["condition"] for row in r["rows"]} for r, _ in loaded.values()))
    first_rows = next(iter(loaded.values()))[0]["rows"]
    rows = [r for r in first_rows if r["condition"] in common]
    candidates = [r for r in rows if r["kind"] == "relay" and r["selector"] not in NOT_CANDIDATES]
    if not candidates:
        raise SystemExit("no trained selector condition common to every run")

    def row_for(
        task: str, records: dict[str, list[dict]], paired: list[dict], full_helps: int, qualifies: bool | None
    ) -> list[dict]:
        out, answered = [], answered_by_any(records)
        for cand in candidates:
            recs = records[cand["condition"]]
            vs = next(
                (
                    p
                    for p in paired
                    if p["condition"] == cand["condition"] and p["reference"] == "best heuristic"
                ),
                None,
            )
            out.append(
                {
                    "task": task,
                    "condition": cand["condition"],
                    "n": len(recs),
                    "full_helps": full_helps,
                    "qualifies": qualifies,
                    "answered_by_any": answered,
                    "sent_any": _mean((r.get("transfer_tokens") or 0) > 0 for r in recs),
                    "accuracy": _mean(r.get("correct") for r in recs),
                    "leakage": _mean(r.get("leaked") for r in recs),
                    "gold_logprob": _mean(r.get("gold_logprob") for r in recs),
                    "best_heuristic": vs and (vs["reference_logprob"], vs.get("reference_gain")),
                    "vs_best_logprob": vs and vs["gold_logprob"],
                    "vs_best_gain": vs and vs.get("gain_recovered"),
                }
            )
        return out

    def each_heuristic(task: str, records: dict[str, list[dict]]) -> list[dict]:
        """Every candidate against every heuristic at its budget and gate (no hindsight choice)."""
        out = []
        for cand in candidates:
            for h in rows:
                if h["kind"] != "relay" or h["selector"] not in HEURISTICS:
                    continue
                if (h["budget"], h["gate"]) != (cand["budget"], cand["gate"]):
                    continue
                stats = paired_comparison(
                    [r.get("gold_logprob") for r in records[cand["condition"]]],
                    [r.get("gold_logprob") for r in records[h["condition"]]],
                )
                out.append(
                    {"task": task, "condition": cand["condition"], "heuristic": h["selector"], **stats}
                )
        return out

    table, each, pooled, split, confidence = [], [], defaultdict(list), [], []
    qualifying, pooled_qualifying = [], defaultdict(list)
    for task, (result, records) in loaded.items():
        n = len(records[candidates[0]["condition"]])
        qualifies = n > 0 and result["full_helps"] >= QUALIFYING_SHARE * n
        table += row_for(task, records, result["paired"], result["full_helps"], qualifies)
        if qualifies:
            qualifying.append(task)
            for cond in common:
                pooled_qualifying[cond] += records[cond]
        each += each_heuristic(task, records)
        task_split, task_confidence = by_small_model(task, rows, records)
        split += task_split
        confidence += [task_confidence] if task_confidence else []
        for cond in common:
            pooled[cond] += records[cond]
    for cond, recs in pooled.items():  # problem ids must stay unique once pooled
        ids = [r.get("id") for r in recs]
        if len(set(ids)) != len(ids):
            raise SystemExit(
                f"problem ids repeat across the runs (condition {cond}): pool distinct problems only"
            )
    full_helps = sum(r["full_helps"] for r, _ in loaded.values())
    table += row_for("pooled", pooled, _paired(rows, pooled, gain_min_nats), full_helps, None)
    each += each_heuristic("pooled", pooled)
    if qualifying and len(qualifying) < len(loaded):
        helps = sum(loaded[t][0]["full_helps"] for t in qualifying)
        paired = _paired(rows, pooled_qualifying, gain_min_nats)
        table += row_for("pooled (qualifying)", pooled_qualifying, paired, helps, True)
        each += each_heuristic("pooled (qualifying)", pooled_qualifying)
    return {
        "runs": {k: str(v) for k, v in runs.items()},
        "gain_min_nats": gain_min_nats,
        "qualifying_tasks": qualifying,
        "rows": table,
        "each_heuristic": each,
        "by_small_model": split,
        "small_confidence": confidence,
    }


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.1f}%"


def _cmp(stats) -> str:
    if not stats or stats["mean_diff"] is None:
        return "| | |"
    return (
        f"| {stats['mean_diff']:+.3f} [{stats['ci_low']:+.3f}, {stats['ci_high']:+.3f}] "
        f"| {stats['wins']}/{stats['losses']}/{stats['ties']} (n={stats['n']}) |"
    )


def markdown(summary: dict) -> str:
    head = (
        "| task | condition | n | full helps | qualifies | answered by any | sent any | accuracy | leakage | gold log-prob "
        "| best heuristic (lp / gain) | Δ log-prob vs best [95% CI] | W/L/T | Δ gain recovered vs best [95% CI] "
        "| W/L/T |\n|" + " --- |" * 15
    )
    lines = [head]
    for r in summary["rows"]:
        best = r["best_heuristic"]
        best_text = f"{best[0]} / {best[1]}" if best and best[1] else (best[0] if best else "")
        lp = "" if r["gold_logprob"] is None else f"{r['gold_logprob']:.2f}"
        lines.append(
            f"| {r['task']} | {r['condition']} | {r['n']} | {r['full_helps']} "
            f"| {'' if r['qualifies'] is None else ('yes' if r['qualifies'] else 'no')} | {r['answered_by_any']} "
            f"| {_pct(r['sent_any'])} | {_pct(r['accuracy'])} "
            f"| {_pct(r['leakage'])} | {lp} | {best_text} "
            + _cmp(r["vs_best_logprob"])
            + _cmp(r["vs_best_gain"])[1:]
        )
    lines += [
        "",
        "Gold log-prob against each heuristic (same budget and gate; mean and median per-problem difference):",
        "",
        "| task | condition | vs | Δ mean [95% CI] | Δ median | W/L/T |",
        "|" + " --- |" * 6,
    ]
    for r in summary.get("each_heuristic", []):
        if r["mean_diff"] is None:
            continue
        lines.append(
            f"| {r['task']} | {r['condition']} | {r['heuristic']} | {r['mean_diff']:+.3f} "
            f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] | {r['median_diff']:+.3f} "
            f"| {r['wins']}/{r['losses']}/{r['ties']} (n={r['n']}) |"
        )
    if summary.get("by_small_model"):
        lines += [
            "",
            "Gold log-prob of every ungated relay where the small model's own answer was right / wrong:",
            "",
            "| task | condition | right (n) | wrong (n) | sent nothing: right / wrong |",
            "|" + " --- |" * 5,
        ]
        for r in summary["by_small_model"]:
            right, wrong = (
                f"{v:.2f}" if v is not None else "" for v in (r["logprob_right"], r["logprob_wrong"])
            )
            nothing = " / ".join(
                f"{v:.0%}" if v is not None else "–"
                for v in (r.get("sent_nothing_right"), r.get("sent_nothing_wrong"))
            )
            lines.append(
                f"| {r['task']} | {r['condition']} | {right} ({r['n_right']}) | {wrong} ({r['n_wrong']}) "
                f"| {nothing} |"
            )
    if summary.get("small_confidence"):
        lines += [
            "",
            "The small model's confidence in its stated answer (small_prob) against its correctness:",
            "",
            "| task | AUROC | median right | median wrong | right / wrong |",
            "|" + " --- |" * 5,
        ]
        for r in summary["small_confidence"]:
            cells = [
                f"{v:.3f}" if v is not None else ""
                for v in (r["auroc"], r["median_prob_right"], r["median_prob_wrong"])
            ]
            lines.append(f"| {r['task']} | {' | '.join(cells)} | {r['n_right']} / {r['n_wrong']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="summarize_evals", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "runs", nargs="+", metavar="TASK=EVAL_OUT", help="a task name and its eval output folder"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for summary.md and summary.json")
    args = parser.parse_args(argv)
    runs = {}
    for item in args.runs:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"expected TASK=EVAL_OUT, got {item!r}")
        if name in runs or name.startswith("pooled"):
            raise SystemExit(f"task name {name!r} given twice or reserved")
        runs[name] = Path(path)
    summary = summarize(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "summary.json", summary)
    text = markdown(summary)
    (args.out / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
