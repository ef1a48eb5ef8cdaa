"""Phase D: score the set-value selector's held-out transfers with the large model (bfloat16, the relay's prompt),
reusing recorded (and $PRIOR's earlier scored) values for identical transfer texts. Writes $PROBES21_WORK/scored.json ($SCORED; resumable; $PRIOR: earlier scored files to reuse)."""

import os
import sys
import time
from pathlib import Path

import torch
from common import REPO, WORK, read_json, records_by_id, write_json

from selector.agents import Agent
from selector.answers import answers_match, contains_answer
from selector.gating import answer_from_generation
from selector.prompts import answer_target, transfer_prompt
from selector.units import Unit, join_units

OUT = Path(os.environ.get("SCORED", str(WORK / "scored.json")))
masks = read_json(os.environ.get("MASKS", str(WORK / "masks.json")))
done = read_json(OUT) if OUT.exists() else {}
torch.set_num_threads(1)
large = Agent.from_pretrained(REPO / "models" / "qwen2.5-coder-1.5b-instruct", dtype="bfloat16")
only = sys.argv[1:]
prior = {}
for p in os.environ.get("PRIOR", "").split(","):
    if p and os.path.exists(p):
        for f, d in read_json(p).items():
            for pid, e in d.items():
                prior[(f, pid, e["text"])] = e


def score(question, text, gold):
    p = transfer_prompt(large, question, text)
    gens, scores = large.answer_and_score([p.as_pair()], [answer_target(gold)], max_new_tokens=16)
    ans = answer_from_generation(gens[0].text)
    return {
        "gold_logprob": scores[0].logprob,
        "answer": ans,
        "correct": answers_match(ans, gold),
        "leaked": contains_answer(text, gold),
        "scored": True,
    }


t0 = time.time()
n_new = 0
for folder in sorted(masks):
    if only and folder not in only:
        continue
    items = {it["id"]: it for it in torch.load(WORK / "feats" / f"{folder}.pt", weights_only=False)}
    by = records_by_id(folder)
    res = done.setdefault(folder, {})
    for pid, m in masks[folder].items():
        if pid in res:
            continue
        it = items[pid]
        units = [Unit(i, s, e, it["reasoning"][s:e]) for i, (s, e) in enumerate(it["units"])]
        text = join_units(it["reasoning"], units, m["mask"]) if any(m["mask"]) else ""
        entry = {"text": text, "sent": any(m["mask"])}
        if not text:
            d = by[pid]["large_direct"]
            entry.update(
                gold_logprob=it["f_none"],
                answer=d["answer"],
                correct=d["correct"],
                leaked=False,
                scored=False,
            )
        else:
            recorded = next(
                (r for r in by[pid].values() if r.get("transfer_text") == text and r["path"] == "transfer"),
                None,
            )
            if (folder, pid, text) in prior:
                entry.update(
                    {k: v for k, v in prior[(folder, pid, text)].items() if k not in ("text", "sent")}
                )
            elif recorded is not None:
                entry.update(
                    gold_logprob=recorded["gold_logprob"],
                    answer=recorded["answer"],
                    correct=recorded["correct"],
                    leaked=recorded["leaked"],
                    scored=False,
                )
            else:
                entry.update(score(it["question"], text, it["gold"]))
                n_new += 1
        res[pid] = entry
        if n_new and n_new % 10 == 0:
            write_json(OUT, done)
    write_json(OUT, done)
    print(folder, len(res), "new scored so far", n_new, "%.0fs" % (time.time() - t0), flush=True)
