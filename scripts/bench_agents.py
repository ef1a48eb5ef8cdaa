"""Benchmark the foundation on real models: reasoning throughput by batch size, scoring by prefix reuse.

    python -m scripts.bench_agents --small MODELS/qwen2.5-coder-0.5b-instruct \
        --large MODELS/qwen2.5-coder-1.5b-instruct --out runs/bench_agents

1. `tokenrelay reason` (``run_reason``) on N gsm_symbolic problems at batch 1 and batch B:
   generated tokens per second of wall time.
2. ``Agent.score`` for V reasoning variants (random sentence subsets of one trace) of one question
   on the large model: one at a time, batched, batched + prefix KV reuse; variants/s and the
   largest difference from the one-at-a-time scores.

Prints a table and writes ``results.json``. Outputs of finished stages are kept in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import time
from pathlib import Path

import torch

from selector.agents import Agent
from selector.data import ColumnMap, load_examples
from selector.io import write_json_atomic
from selector.prompts import answer_target, transfer_prompt
from selector.traces import ReasonConfig, load_traces, run_reason
from selector.units import join_units, split_units


def _prepare(out: Path, n: int) -> Path:
    from scripts.prepare_data import main as prepare

    path = out / "gsm_symbolic.jsonl"
    if not path.exists():
        prepare(["reasoning-gym", "--task", "gsm_symbolic", "--n", str(n), "--seed", "0", "--out", str(path)])
    return path


def bench_reason(small: Agent, data: Path, out: Path, args) -> list[dict]:
    rows = []
    for batch, limit in ((1, args.batch1_limit), (args.batch_size, args.n)):
        folder, saved = out / f"traces_b{batch}", out / f"reason_b{batch}.json"
        if saved.exists():  # timed earlier: a resumed run's wall time would mean nothing
            rows.append(json.loads(saved.read_text()))
            continue
        shutil.rmtree(folder, ignore_errors=True)  # a half-finished run cannot be timed: redo it
        config = ReasonConfig(
            data=str(data), model=small.name, out=str(folder), limit=limit,
            batch_size=batch, max_new_tokens=args.max_new_tokens, columns=ColumnMap(),
        )  # fmt: skip
        start = time.perf_counter()
        run_reason(config, agent=small)
        wall = time.perf_counter() - start
        traces = load_traces(folder)
        tokens = sum(traces["new_tokens"])
        row = {
            "batch_size": batch, "problems": len(traces), "generated_tokens": tokens, "wall_s": wall,
            "tokens_per_s": tokens / wall, "truncated": sum(f == "length" for f in traces["finish_reason"]),
            "small_correct": sum(bool(c) for c in traces["small_correct"]),
        }  # fmt: skip
        write_json_atomic(saved, row, indent=None)
        rows.append(row)
    return rows


def bench_score(large: Agent, traces, args) -> list[dict]:
    trace = max(traces, key=lambda t: len(split_units(t["reasoning"], "sentence")))
    units = split_units(trace["reasoning"], "sentence")
    rng = random.Random(0)
    variants = [
        join_units(trace["reasoning"], units, [rng.random() < 0.5 for _ in units])
        for _ in range(args.variants)
    ]
    requests = [transfer_prompt(large, trace["question"], v).as_pair() for v in variants]
    target = answer_target(trace["answer"])
    tokens = sum(len(large.tokenizer(p + r, add_special_tokens=False)["input_ids"]) for p, r in requests)
    modes = {
        "one at a time": {"batch_size": 1, "reuse_prefix": False},
        f"batched ({args.score_batch})": {"batch_size": args.score_batch, "reuse_prefix": False},
        f"batched ({args.score_batch}) + prefix reuse": {
            "batch_size": args.score_batch,
            "reuse_prefix": True,
        },
    }
    results, rows = {}, []
    for name, kwargs in modes.items():
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            results[name] = large.score(requests, target, **kwargs)
            times.append(time.perf_counter() - start)
        wall = statistics.median(times)
        rows.append({"mode": name, "variants": len(requests), "prompt_tokens": tokens, "median_s": wall,
                     "variants_per_s": len(requests) / wall, "prompt_tokens_per_s": tokens / wall})  # fmt: skip
    base = [r.logprob for r in results["one at a time"]]
    for row in rows:
        got = [r.logprob for r in results[row["mode"]]]
        row["max_abs_diff_vs_one_at_a_time"] = max(abs(a - b) for a, b in zip(base, got))
        row["speedup_vs_one_at_a_time"] = rows[0]["median_s"] / row["median_s"]
    prefix_tokens = len(large.tokenizer(requests[0][0], add_special_tokens=False)["input_ids"])
    for row in rows:
        row["prefix_tokens"] = prefix_tokens
    return rows


def _table(rows: list[dict], keys: list[str]) -> str:
    head = "| " + " | ".join(keys) + " |\n|" + "---|" * len(keys)
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    return head + "".join("\n| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", required=True, help="small model folder (reasons)")
    parser.add_argument("--large", required=True, help="large model folder (scores)")
    parser.add_argument("--out", default="runs/bench_agents", help="output folder (kept for resuming)")
    parser.add_argument("--n", type=int, default=16, help="problems for the batched run")
    parser.add_argument("--batch1-limit", type=int, default=8, help="problems for the batch-1 run")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--variants", type=int, default=32, help="reasoning variants scored")
    parser.add_argument("--score-batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1, help="timed repeats of each scoring mode (median)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = _prepare(out, args.n)
    load_examples(data)  # fail early on bad data
    small = Agent.from_pretrained(args.small, dtype="float32", device="cpu")
    reason_rows = bench_reason(small, data, out, args)
    del small
    large = Agent.from_pretrained(args.large, dtype="float32", device="cpu")
    score_rows = bench_score(large, load_traces(out / f"traces_b{args.batch_size}"), args)
    result = {
        "machine": f"CPU, {torch.get_num_threads()} torch threads",
        "small": args.small, "large": args.large, "reason": reason_rows, "score": score_rows,
    }  # fmt: skip
    write_json_atomic(out / "results.json", result)
    print(
        _table(
            reason_rows,
            [
                "batch_size",
                "problems",
                "generated_tokens",
                "wall_s",
                "tokens_per_s",
                "truncated",
                "small_correct",
            ],
        )
    )
    print()
    print(_table(score_rows, ["mode", "variants", "prefix_tokens", "prompt_tokens", "median_s", "variants_per_s",
                              "speedup_vs_one_at_a_time", "max_abs_diff_vs_one_at_a_time"]))  # fmt: skip
    print(f"\nwrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
