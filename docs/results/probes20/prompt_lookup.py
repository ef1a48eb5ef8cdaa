"""Session probe (twentieth session, issue 13): is prompt-lookup decoding a latency lever for the small model?

Prompt lookup (transformers' ``prompt_lookup_num_tokens``) drafts the next k tokens by copying the n-gram that
followed the last match in the prompt and the text so far, and verifies them in one forward: the greedy output is
unchanged, and on copy-heavy text (reasoning that restates an equation line by line) it can accept several tokens a
step. Here it is timed against plain greedy decoding on the relay's reasoning prompt, same model, dtype and threads:

    python docs/results/probes20/prompt_lookup.py --model models/qwen2.5-coder-0.5b-instruct --dtype bfloat16 \
        --threads 2 --data data/se3_rep9_32.jsonl --n 4 --out docs/results/probes20/prompt_lookup_small_bf16_t2.json
    # the committed rows: the 0.5B in float32 / bfloat16 at 1 and 2 threads (--n 4), the 1.5B in bfloat16 at 2
    # threads with --tokens 384 --k 3 10 --n 3 (its own reasoning's budget in the latency benchmark)

Writes one row per question: plain greedy seconds and tokens, and for each k the speed-up (plain / lookup seconds)
and whether the tokens were identical.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from selector.agents import Agent
from selector.prompts import reasoning_prompt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--data", required=True)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--tokens", type=int, default=256, help="the relay's reason_tokens")
    p.add_argument("--k", type=int, nargs="+", default=[3, 6, 10], help="draft lengths to try")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    agent = Agent.from_pretrained(args.model, dtype=args.dtype, device="cpu")
    tok, model = agent.tokenizer, agent.model.eval()
    questions = [json.loads(line) for line in Path(args.data).read_text().splitlines()][: args.n]
    rows = []
    for q in questions:
        text = reasoning_prompt(
            agent, q["question"]
        ).text  # the relay's reasoning prompt, as the relay renders it
        ids = tok(text, return_tensors="pt")
        runs = {}
        for k in [0, *args.k]:
            kwargs = {"max_new_tokens": args.tokens, "do_sample": False}
            if k:
                kwargs["prompt_lookup_num_tokens"] = k
            start = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(**ids, **kwargs)
            runs[k] = (time.perf_counter() - start, out[0, ids["input_ids"].shape[1] :].tolist())
        plain_s, plain_ids = runs[0]
        row = {"id": q["id"], "tokens": len(plain_ids), "plain_s": round(plain_s, 3)}
        for k in args.k:
            row[f"speedup_k{k}"] = round(plain_s / runs[k][0], 3)
            row[f"identical_k{k}"] = runs[k][1] == plain_ids
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {
        f"k{k}": {
            "median_speedup": statistics.median(r[f"speedup_k{k}"] for r in rows),
            "identical": sum(r[f"identical_k{k}"] for r in rows),
        }
        for k in args.k
    }
    meta = {"model": args.model, "dtype": args.dtype, "threads": args.threads, "tokens": args.tokens}
    Path(args.out).write_text(json.dumps({"args": meta, "summary": summary, "rows": rows}, indent=1) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
