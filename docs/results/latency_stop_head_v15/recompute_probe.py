"""A session probe: how long the second forward took that the streamed relay used to run for the selector's
hidden states (a teacher-forced pass over prompt + reasoning, counted by no stage), on 12 transfers of the
fourteenth session's stop-head run, small model in float16 on 2 threads as in the benchmark.

    python docs/results/latency_stop_head_v15/recompute_probe.py
"""

import json
import statistics
import time
from pathlib import Path

import torch

from selector.agents import Agent
from selector.prompts import reasoning_prompt

RUN = Path("runs/bench_latency_half_stop/live/calibrated+stop=head-87756dc4d5.jsonl")


def main() -> None:
    torch.set_num_threads(2)
    small = Agent.from_pretrained("models/qwen2.5-coder-0.5b-instruct", device="cpu", dtype="float16")
    rows = [json.loads(line) for line in RUN.read_text().splitlines()]
    rows = [r for r in rows if r["path"] == "transfer"][:12]
    data = Path("data/simple_eq_eval32.jsonl").read_text().splitlines()
    questions = {q["id"]: q["question"] for q in map(json.loads, data)}
    times = []
    for r in rows:
        prompt = reasoning_prompt(small, questions[r["id"]])
        ids = small.tokenizer.encode(r["reasoning"], add_special_tokens=False)
        started = time.perf_counter()
        small.hidden_states_of([prompt.text], [ids], layer=-1)
        times.append(time.perf_counter() - started)
    reasoning = [r["stages"]["small_reasoning"]["seconds"] for r in rows]
    print(json.dumps({"n": len(times), "median_s": statistics.median(times), "mean_s": statistics.mean(times),
                      "mean_small_reasoning_s": statistics.mean(reasoning)}))  # fmt: skip


if __name__ == "__main__":
    main()
