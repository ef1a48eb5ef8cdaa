"""Benchmark the relay on a real small/large pair: gates never / always / agreement vs large step-by-step.

Per problem it runs (batch 1, so stage times are per-question latency), caching every result in
``OUT/cache.jsonl`` so an interrupted run resumes where it stopped:

- ``never``: the relay with gate never (the large model's direct answer, gold log-prob scored);
- ``always``: the relay with gate always (small reasoning, selector at the budget, large answer);
- ``full``: log p_large(gold | the full reasoning transferred), to count problems where transfer helps;
- ``cot``: the large model reasoning step by step on its own (accuracy, output tokens, latency).

Gate ``agreement`` is composed from ``never`` and ``always`` exactly as the relay decides it
(greedy decoding is deterministic): transfer when the small and the direct answers disagree; its
latency is large direct + small reasoning (+ selection and the transfer answer when it transfers).

    python -m scripts.bench_relay --data data/chain_sum.jsonl --out runs/bench_relay --limit 16
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from selector.agents import Agent
from selector.answers import answers_match, extract_answer
from selector.data import load_examples
from selector.gating import Gate
from selector.prompts import answer_target, reasoning_prompt, transfer_prompt
from selector.relay import STAGES, Relay, RelayConfig

PARTS = ("never", "always", "full", "cot")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="examples JSONL (scripts.prepare_data)")
    p.add_argument("--out", required=True, help="folder for cache.jsonl and summary.json")
    p.add_argument("--small", default="/work/models/qwen2.5-coder-0.5b-instruct")
    p.add_argument("--large", default="/work/models/qwen2.5-coder-1.5b-instruct")
    p.add_argument("--selector", default="selfinfo")
    p.add_argument("--budget", type=float, default=0.25, help="ratio of reasoning tokens kept")
    p.add_argument("--granularity", default="sentence")
    p.add_argument("--limit", type=int, default=16)
    p.add_argument("--reason-tokens", type=int, default=256)
    p.add_argument("--answer-tokens", type=int, default=16)
    p.add_argument("--cot-tokens", type=int, default=256)
    p.add_argument("--parts", default=",".join(PARTS), help="which parts to run (comma list)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def _load_cache(path: Path) -> dict[tuple[str, str], dict]:
    cache = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                cache[(rec["id"], rec["part"])] = rec
    return cache


def _relay_config(args, gate: str) -> RelayConfig:
    return RelayConfig(
        selector=args.selector,
        budget=args.budget,
        gate=gate,
        granularity=args.granularity,
        reason_tokens=args.reason_tokens,
        answer_tokens=args.answer_tokens,
        batch_size=1,
        score_gold=True,
    )


def run_parts(args, examples, cache: dict, cache_path: Path) -> None:
    parts = [p for p in args.parts.split(",") if p]
    todo = [(ex, part) for ex in examples for part in parts if (ex.id, part) not in cache]
    if not todo:
        return
    load = {"dtype": args.dtype, "device": args.device}
    large = Agent.from_pretrained(args.large, **load)
    small = Agent.from_pretrained(args.small, **load) if {"always", "full"} & {p for _, p in todo} else None
    relays = {
        "never": Relay(None, large, args.selector, _relay_config(args, "never")),
        "always": Relay(small, large, args.selector, _relay_config(args, "always")) if small else None,
    }
    start = time.time()
    for k, (ex, part) in enumerate(todo):
        if part in ("never", "always"):
            rec = relays[part].run([ex], progress=False)[0].to_record()
        elif part == "full":
            always = cache.get((ex.id, "always"))
            if always is None:
                continue  # needs the small model's reasoning first
            prompt = transfer_prompt(large, ex.question, always["reasoning"], images=ex.images)
            score = large.score([prompt.as_pair()], answer_target(ex.answer), images=[prompt.images])[0]
            rec = {"gold_logprob": score.logprob}
        else:  # cot: the large model on its own, step by step
            prompt = reasoning_prompt(large, ex.question, choices=ex.choices, images=ex.images)
            gen = large.generate([prompt.text], images=[prompt.images], max_new_tokens=args.cot_tokens)[0]
            answer = extract_answer(gen.text)
            rec = {
                "output": gen.text,
                "answer": answer,
                "correct": answers_match(answer, ex.answer),
                "new_tokens": gen.new_tokens,
                "prompt_tokens": gen.prompt_tokens,
                "finish_reason": gen.finish_reason,
                "prefill_s": gen.prefill_s,
                "decode_s": gen.decode_s,
                "latency_s": gen.prefill_s + gen.decode_s,
            }
        rec.update(id=ex.id, part=part)
        cache[(ex.id, part)] = rec
        with cache_path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(
            f"[{k + 1}/{len(todo)}] {ex.id} {part} ({time.time() - start:.0f}s)", file=sys.stderr, flush=True
        )


def _stage_means(records: list[dict]) -> dict[str, float]:
    return {
        s: statistics.fmean(r["stages"][s]["seconds"] if s in r["stages"] else 0.0 for r in records)
        for s in STAGES
    }


def _agreement(never: dict, always: dict) -> dict:
    """The relay's agreement gate from the direct and the transfer runs of one problem."""
    transfer = Gate("agreement").transfer(
        never["direct_answer"], never["direct_prob"], always["small_answer"]
    )
    chosen = always if transfer else never
    stages = {
        "large_direct": never["stages"]["large_direct"],
        "small_reasoning": always["stages"]["small_reasoning"],
    }
    if transfer:
        stages.update({s: always["stages"][s] for s in ("selection", "large_prefill", "large_decode")})
    return {
        "path": "transfer" if transfer else "direct",
        "correct": chosen["correct"],
        "leaked": chosen["leaked"],
        "gold_logprob": chosen["gold_logprob"],
        "stages": stages,
        "latency_s": sum(v["seconds"] for v in stages.values()),
    }


def summarize(examples, cache: dict) -> dict:
    ids = [ex.id for ex in examples if all((ex.id, p) in cache for p in ("never", "always"))]
    rows = {}
    per_gate = {
        "never": [cache[(i, "never")] for i in ids],
        "always": [cache[(i, "always")] for i in ids],
        "agreement": [_agreement(cache[(i, "never")], cache[(i, "always")]) for i in ids],
    }
    for gate, recs in per_gate.items():
        if not recs:
            continue
        rows[f"relay {gate}"] = {
            "n": len(recs),
            "accuracy": statistics.fmean(bool(r["correct"]) for r in recs),
            "leakage": statistics.fmean(bool(r["leaked"]) for r in recs),
            "gold_logprob": statistics.fmean(r["gold_logprob"] for r in recs),
            "transfer_rate": statistics.fmean(r["path"] == "transfer" for r in recs),
            "stage_s": _stage_means(recs),
            "latency_s": statistics.fmean(r["latency_s"] for r in recs),
        }
    cot = [cache[(ex.id, "cot")] for ex in examples if (ex.id, "cot") in cache]
    if cot:
        rows["large step-by-step"] = {
            "n": len(cot),
            "accuracy": statistics.fmean(r["correct"] for r in cot),
            "leakage": None,
            "output_tokens": statistics.fmean(r["new_tokens"] for r in cot),
            "truncated": sum(r["finish_reason"] == "length" for r in cot),
            "latency_s": statistics.fmean(r["latency_s"] for r in cot),
        }
    always = per_gate["always"]
    extra = {}
    if always:
        gold = {ex.id: ex.answer for ex in examples}
        extra["small_reasoning_correct"] = sum(
            answers_match(r["small_answer"], gold[r["id"]]) for r in always
        )
        extra["small_reasoning_tokens"] = statistics.fmean(
            r["stages"]["small_reasoning"]["new_tokens"] for r in always
        )
        extra["transfer_tokens"] = statistics.fmean(r["transfer_tokens"] for r in always)
        extra["reasoning_tokens_large"] = statistics.fmean(r["reasoning_tokens"] for r in always)
        full = [
            (cache[(i, "full")]["gold_logprob"], cache[(i, "never")]["gold_logprob"])
            for i in ids
            if (i, "full") in cache
        ]
        if full:
            extra["full_transfer_gold_logprob"] = statistics.fmean(f for f, _ in full)
            extra["full_transfer_helps"] = sum(f > d for f, d in full)
            extra["full_scored"] = len(full)
    return {"problems": len(ids), "rows": rows, "extra": extra}


def print_table(summary: dict) -> None:
    head = (
        f"{'method':22} {'n':>3} {'acc':>5} {'leak':>5} {'logp':>7} {'xfer':>5} "
        + " ".join(f"{s[:9]:>9}" for s in STAGES)
        + f" {'total_s':>8} {'out_tok':>7}"
    )
    print(head)
    for name, r in summary["rows"].items():
        stages = r.get("stage_s") or {}
        leak = "-" if r["leakage"] is None else f"{r['leakage']:.2f}"
        logp = f"{r['gold_logprob']:.2f}" if "gold_logprob" in r else "-"
        xfer = f"{r['transfer_rate']:.2f}" if "transfer_rate" in r else "-"
        cells = " ".join(f"{stages[s]:9.2f}" if s in stages else f"{'-':>9}" for s in STAGES)
        out_tok = f"{r['output_tokens']:.0f}" if "output_tokens" in r else "-"
        print(
            f"{name:22} {r['n']:3d} {r['accuracy']:5.2f} {leak:>5} {logp:>7} {xfer:>5} {cells} {r['latency_s']:8.2f} {out_tok:>7}"
        )
    for k, v in summary["extra"].items():
        print(f"  {k}: {v:.2f}" if isinstance(v, float) else f"  {k}: {v}")


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    examples = load_examples(args.data, limit=args.limit)
    cache_path = out / "cache.jsonl"
    cache = _load_cache(cache_path)
    run_parts(args, examples, cache, cache_path)
    summary = summarize(examples, cache)
    summary["args"] = vars(args)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print_table(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
