"""Re-score recorded heuristic transfers (the evaluation's own numbers) with this session's scoring path."""

import random

import numpy as np
import torch
from common import REPO, ROOTS, WORK, read_records, write_json

from selector.agents import Agent
from selector.data import load_examples
from selector.prompts import answer_target, transfer_prompt

torch.set_num_threads(1)
large = Agent.from_pretrained(REPO / "models" / "qwen2.5-coder-1.5b-instruct", dtype="bfloat16")
rng = random.Random(0)
pairs = []
for folder in sorted(ROOTS):
    exs = {e.id: e for e in load_examples(str(WORK / "data" / f"{folder}.jsonl"))}
    recs = read_records(ROOTS[folder])
    cand = [
        r
        for r in recs
        if r["condition"].startswith("relay:") and r["path"] == "transfer" and r.get("transfer_text")
    ]
    for r in rng.sample(cand, min(2, len(cand))):
        ex = exs[r["id"]]
        p = transfer_prompt(large, ex.question, r["transfer_text"])
        _, s = large.answer_and_score([p.as_pair()], [answer_target(ex.answer)], max_new_tokens=16)
        pairs.append((folder, r["condition"], r["gold_logprob"], s[0].logprob))
        print(folder, r["condition"], "{:.3f} {:.3f}".format(r["gold_logprob"], s[0].logprob), flush=True)
d = np.array([b - a for _, _, a, b in pairs])
print(
    "n",
    len(d),
    f"median |diff| {np.median(abs(d)):.3f}, 90th pct {np.quantile(abs(d), 0.9):.3f}, max {abs(d).max():.3f}",
)
write_json(str(WORK / "validate.json"), pairs)
