"""Session analysis (sixteenth session): can a cheaper or better signal than the confidence gate's answer
probability tell which direct answers to keep?

    python docs/results/gate_probes16/analyze.py confidence   # measures of the direct answer's probability
    python docs/results/gate_probes16/analyze.py pik          # a probe on the large model's pre-answer state

``confidence`` reads the evaluation folders under runs/ (their cached direct generations and records): per task
the AUROC for "the direct answer is right" of the gate's measure (``dp``: per-token geometric mean of the answer
line, leading whitespace skipped), the same with the leading tokens (``mean_line``), and the joint probability of
the answer line (``joint``); then, on simple_equations (the three latency samples and the dev split, where the
always-transfer relay's answer is cached for every question), the relay's accuracy when the least confident
share of questions is transferred, for each measure. ``pik`` fits a logistic probe on the states
``collect_direct.py`` saved (training questions only; 5-fold out-of-fold AUROC per task, then the dev split)
and sets it beside ``dp``. Both write their tables to this folder (``confidence.json``, ``pik.json``).
"""

from __future__ import annotations

import glob
import json
import math
import os
import random
import sys
from pathlib import Path

from selector.gating import answer_probability

HERE = Path(__file__).parent
RUNS = Path(os.environ.get("RUNS", "runs"))
DATA = Path("data")
LATENCY = {  # folder (a copy of the latency benchmark's, with the always row added) -> test file
    "sim16_bench_latency_half_stop15": "simple_eq_eval32",
    "sim16_bench_latency_half_se3rep_stop15": "se3_rep32",
    "sim16_bench_latency_half_se3_rep3_stop": "se3_rep3_32",
}
TASK_DATA = {"se3": "simple_eq_eval32"}


def auroc(scores: list[float], labels: list[bool]) -> float:
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return float("nan")
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / len(pos) / len(neg)


def line_logprobs(tok, ids: list[int], logprobs: list[float]) -> list[float]:
    """The answer line's log-probs, its leading whitespace-only tokens included (the gate's measure,
    ``selector.gating.answer_probability``, skips them)."""
    line = []
    for k, lp in enumerate(logprobs):
        if "\n" in tok.decode(ids[:k], skip_special_tokens=True).lstrip():
            break
        line.append(lp)
    return line


def measures(tok, gen: dict) -> dict[str, float]:
    full = line_logprobs(tok, gen["token_ids"], gen["logprobs"])
    return {
        "dp": answer_probability(tok, gen["token_ids"], gen["logprobs"]) or 0.0,
        "mean_line": math.exp(sum(full) / len(full)) if full else 0.0,
        "joint": math.exp(sum(full)),
    }


def direct_rows(tok, folder: Path, data: str) -> list[dict]:
    """Per question: the direct answer's measures and correctness, and the always-transfer relay's."""
    questions = {}
    for line in (DATA / f"{data}.jsonl").read_text().splitlines():
        ex = json.loads(line)
        questions[ex["id"]] = ex["question"].strip()
    gens = []
    for line in (folder / "cache" / "outputs.jsonl").read_text().splitlines():
        out = json.loads(line)
        prompt = out.get("prompt", "")
        if (out["kind"] == "generate" and "1.5b" in out["model"] and "Key steps" not in prompt
                and prompt.rstrip().endswith("Answer:") and out["params"]["max_new_tokens"] <= 32):  # fmt: skip
            gens.append(out)
    by_id: dict[str, dict] = {}
    for line in (folder / "records.jsonl").read_text().splitlines():
        r = json.loads(line)
        by_id.setdefault(r["id"], {})[r["condition"]] = r
    rows = []
    for qid, conds in by_id.items():
        gen = next(g["value"] for g in gens if questions[qid] in g["prompt"])
        always = next((r for c, r in conds.items() if c.endswith(":always")), None)
        rows.append({"id": qid, "direct": conds["large_direct"]["correct"],
                     "transfer": always["correct"] if always else None, **measures(tok, gen)})  # fmt: skip
    return rows


def confidence() -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained("models/qwen2.5-coder-1.5b-instruct")
    per_task, pooled = {}, {k: ([], []) for k in ("dp", "mean_line", "joint")}
    folders = [(Path(f), TASK_DATA.get(f.split("m5_")[1], f.split("m5_")[1] + "_eval32"))
               for f in sorted(glob.glob(str(RUNS / "m5_*")))]  # fmt: skip
    folders += [(RUNS / f / "eval", d) for f, d in LATENCY.items()]
    folders.append((RUNS / "sim16_bench_latency_half_stop15" / "dev_eval", "simple_eq_dev24"))
    se_rows = []
    for folder, data in folders:
        if not (DATA / f"{data}.jsonl").exists():
            continue
        rows = direct_rows(tok, folder, data)
        if folder.name in ("eval", "dev_eval"):
            se_rows += rows
        labels = [r["direct"] for r in rows]
        name = folder.parent.name + "/" + folder.name if folder.name.endswith("eval") else folder.name
        per_task[name] = {"right": sum(labels), "wrong": len(labels) - sum(labels),
                          **{k: round(auroc([r[k] for r in rows], labels), 3) for k in pooled}}  # fmt: skip
        for k in pooled:
            pooled[k][0].extend(r[k] for r in rows)
            pooled[k][1].extend(labels)
    at_rate = {}
    n = len(se_rows)
    for share in (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6):
        k = round(share * n)
        at_rate[share] = {}
        for m in pooled:
            ranked = sorted(se_rows, key=lambda r, m=m: r[m])
            at_rate[share][m] = round(
                (sum(r["transfer"] for r in ranked[:k]) + sum(r["direct"] for r in ranked[k:])) / n, 3
            )
    oracle = sum(max(r["transfer"], r["direct"]) for r in se_rows) / n
    result = {"per_task": per_task, "pooled": {k: round(auroc(*v), 3) for k, v in pooled.items()},
              "simple_equations_accuracy_at_transfer_share": at_rate, "questions": n,
              "oracle_accuracy": round(oracle, 3),
              "oracle_transfer_share": round(sum(r["transfer"] and not r["direct"] for r in se_rows) / n, 3)}  # fmt: skip
    (HERE / "confidence.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "per_task"}, indent=1))


def pik() -> None:
    import torch

    recs, feats = {}, {}
    for stem in ("direct_a", "direct_b"):
        for line in (HERE / f"{stem}.jsonl").read_text().splitlines():
            r = json.loads(line)
            recs[r["id"]] = r
        feats.update(torch.load(RUNS / "gate16" / f"{stem[-1]}.pt"))
    groups: dict[str, list[str]] = {}
    for qid, r in recs.items():
        groups.setdefault(r["file"], []).append(qid)
    train = [q for f in ("se3_train", "se2_train", "geo_train", "pf_train", "count_primes_train")
             for q in groups[f + ".jsonl"]]  # fmt: skip

    def fit(ids: list[str], layer: int, lam: float):
        x = torch.stack([feats[q][layer] for q in ids])
        mu, sd = x.mean(0), x.std(0) + 1e-6
        z, y = (x - mu) / sd, torch.tensor([float(recs[q]["correct"]) for q in ids])
        w, b = torch.zeros(z.shape[1], requires_grad=True), torch.zeros(1, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y) + lam * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return lambda others: ((torch.stack([feats[q][layer] for q in others]) - mu) / sd @ w + b).tolist()

    result = []
    for layer, name in enumerate(("-1", "-8", "-15")):
        for lam in (1e-3, 1e-2, 1e-1):
            order = train[:]
            random.Random(0).shuffle(order)
            oof = {}
            for k in range(5):
                held = order[k::5]
                kept = set(held)
                oof.update(zip(held, fit([q for q in order if q not in kept], layer, lam)(held)))
            row = {"layer": name, "l2": lam}
            for f in ("se3_train", "se2_train", "geo_train", "pf_train"):
                ids = groups[f + ".jsonl"]
                labels = [recs[q]["correct"] for q in ids]
                row[f] = {"probe": round(auroc([oof[q] for q in ids], labels), 3),
                          "dp": round(auroc([recs[q]["dp"] or 0.0 for q in ids], labels), 3)}  # fmt: skip
            dev = groups["simple_eq_dev24.jsonl"]
            labels = [recs[q]["correct"] for q in dev]
            row["dev"] = {"probe": round(auroc(fit(train, layer, lam)(dev), labels), 3),
                          "dp": round(auroc([recs[q]["dp"] or 0.0 for q in dev], labels), 3)}  # fmt: skip
            result.append(row)
            print(row, flush=True)
    (HERE / "pik.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    {"confidence": confidence, "pik": pik}[sys.argv[1]]()
