"""Which dtype to load each model in on this machine: prefill and decode speed, and what it changes.

    python -m scripts.bench_dtype --models models/qwen2.5-coder-0.5b-instruct,models/qwen2.5-coder-1.5b-instruct \
        --threads 1 --out runs/bench_dtype

Why: a CPU with bfloat16 units (AVX512-BF16, AMX) prefills several times faster in bfloat16 than in
float32, one without them several times slower, and batch-1 decode is bound by memory traffic, not by
arithmetic; the right dtype is a fact of the machine, so measure it. For each model and dtype, through
``Agent.from_pretrained`` (the relay's own loading path): the prefill time of a prompt of about
``--prompt-tokens`` tokens, the decode seconds per token at batch 1 (greedy, ``--decode-tokens``
tokens forced), each the median of ``--repeats`` runs in alternating dtype order; and against float32:
whether the greedy continuation is the same, and the largest difference in a scored answer's log-prob.
Prints a table and writes ``bench_dtype.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from selector.agent_types import DTYPES, _fast_on_this_cpu
from selector.agents import Agent
from selector.io import write_json_atomic
from selector.prompts import answer_target, transfer_prompt

QUESTION = "Solve for x: 3*x + 17 = 2*x - 5 + 40. Think step by step and give x."


def _prompt(agent: Agent, tokens: int) -> str:
    """The relay's transfer prompt with a reasoning of repeated steps, about ``tokens`` long."""
    step = "We subtract 2*x from both sides and then 17, so x = 35 - 17 = 18. "
    reasoning, text = "", transfer_prompt(agent, QUESTION, None).text
    while len(agent.tokenizer(text)["input_ids"]) < tokens:
        reasoning += step
        text = transfer_prompt(agent, QUESTION, reasoning).text
    return text


def _measure(agent: Agent, prompt: str, decode_tokens: int) -> dict:
    ids = agent.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"].to(agent.device)
    with torch.no_grad():
        start = time.perf_counter()
        agent.model(input_ids=ids, logits_to_keep=1)
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        out = agent.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=decode_tokens,
            min_new_tokens=decode_tokens,
            do_sample=False,
            pad_token_id=agent.tokenizer.pad_token_id,
        )
        whole = time.perf_counter() - start
    return {
        "prefill_s": prefill,
        "decode_s_per_token": max(whole - prefill, 0.0) / decode_tokens,
        "tokens": out[0, ids.shape[1] :].tolist(),
        "prompt_tokens": int(ids.shape[1]),
    }


def bench_model(path: str, dtypes: list[str], args) -> list[dict]:
    agents = {d: Agent.from_pretrained(path, dtype=d, device="cpu") for d in dtypes}
    prompt = _prompt(agents[dtypes[0]], args.prompt_tokens)
    runs: dict[str, list[dict]] = {d: [] for d in dtypes}
    for r in range(args.repeats + 1):  # the first round warms up and is dropped
        order = dtypes if r % 2 == 0 else dtypes[::-1]
        for d in order:
            m = _measure(agents[d], prompt, args.decode_tokens)
            if r > 0:
                runs[d].append(m)
    reference = "float32" if "float32" in dtypes else dtypes[0]
    pair = transfer_prompt(agents[reference], QUESTION, "x = 18.").as_pair()
    scores = {d: agents[d].score([pair], answer_target("18"))[0].logprob for d in dtypes}
    rows = []
    for d in dtypes:
        prefill = statistics.median(m["prefill_s"] for m in runs[d])
        decode = statistics.median(m["decode_s_per_token"] for m in runs[d])
        rows.append(
            {
                "model": Path(path).name,
                "dtype": d,
                "cpu_has_units": _fast_on_this_cpu(DTYPES[d]),
                "prompt_tokens": runs[d][0]["prompt_tokens"],
                "prefill_s": prefill,
                "decode_s_per_token": decode,
                "reference_dtype": reference,
                "same_greedy_tokens": runs[d][0]["tokens"] == runs[reference][0]["tokens"],
                "gold_logprob": scores[d],
                "gold_logprob_diff": scores[d] - scores[reference],
            }
        )
    ref = next(r for r in rows if r["dtype"] == reference)
    for row in rows:  # ratios within one run: what carries to other runs on a noisy machine
        row["prefill_ratio"] = row["prefill_s"] / ref["prefill_s"]
        row["decode_ratio"] = row["decode_s_per_token"] / ref["decode_s_per_token"]
    return rows


def fastest(rows: list[dict]) -> dict[str, dict[str, str]]:
    """Per model, the dtype with the shortest prefill and the one with the shortest decode step: what to set as a
    relay's ``dtype`` (the large model answers from a long prompt: prefill-bound) and ``small_dtype`` (the small model
    reasons: decode-bound). The two can differ, and differ between CPUs (float16 decoded fastest on an AMD EPYC
    without float16 units, bfloat16 on an Intel Xeon with AMX)."""
    models = dict.fromkeys(r["model"] for r in rows)
    return {
        m: {
            phase: min((r for r in rows if r["model"] == m), key=lambda r: r[key])["dtype"]
            for phase, key in (("prefill", "prefill_s"), ("decode", "decode_s_per_token"))
        }
        for m in models
    }


def print_table(rows: list[dict]) -> None:
    """Ratios and differences are against each model's reference dtype (float32 when measured)."""
    print(f"{'model':<32}{'dtype':<10}{'units':>6}{'prefill s':>11}{'ratio':>7}{'decode s/tok':>14}{'ratio':>7}"
          f"{'same greedy':>13}{'d logprob':>11}")  # fmt: skip
    for r in rows:
        print(
            f"{r['model']:<32}{r['dtype']:<10}{r['cpu_has_units']!s:>6}{r['prefill_s']:>11.3f}"
            f"{r['prefill_ratio']:>7.2f}{r['decode_s_per_token']:>14.4f}{r['decode_ratio']:>7.2f}"
            f"{r['same_greedy_tokens']!s:>13}{r['gold_logprob_diff']:>+11.4f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", required=True, help="comma-separated model folders")
    parser.add_argument("--dtypes", default="float32,bfloat16", help=f"comma-separated, of {list(DTYPES)}")
    parser.add_argument(
        "--prompt-tokens", type=int, default=160, help="prefill length (a relay's final prompt)"
    )
    parser.add_argument("--decode-tokens", type=int, default=32, help="greedy tokens forced per decode run")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per dtype (median), after a warm-up"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--out", default="runs/bench_dtype", help="folder for bench_dtype.json")
    args = parser.parse_args(argv)
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    bad = [d for d in dtypes if d not in DTYPES]
    if bad or not dtypes:
        parser.error(f"--dtypes: unknown {bad or 'empty list'}; expected some of {list(DTYPES)}")
    for name in ("prompt_tokens", "decode_tokens", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.threads < 0:
        parser.error("--threads must be >= 0")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    missing = [m for m in models if not Path(m).is_dir()]
    if missing or not models:
        parser.error(f"--models: not a model folder: {missing or 'none given'}")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [row for m in models for row in bench_model(m, dtypes, args)]
    print_table(rows)
    best = fastest(rows)
    for model, phases in best.items():
        print(f"fastest here: {model}: prefill {phases['prefill']}, decode {phases['decode']}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    write_json_atomic(out / "bench_dtype.json", {**meta, "args": vars(args), "rows": rows, "fastest": best})
    return 0


if __name__ == "__main__":
    sys.exit(main())
