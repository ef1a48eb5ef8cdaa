"""How long does a model reason, and how well, under each reasoning instruction?

    python -m scripts.bench_instructions --model models/qwen2.5-coder-1.5b-instruct --dtype float16 \\
        --data data/simple_eq_dev24.jsonl --max-new-tokens 384 --out runs/instructions_large.json \\
        --instruction brief="Solve the problem briefly, writing only the essential steps. End with a final line of the form 'Answer: <answer>'."

The reasoning instruction is the sentence after the question (``PromptTemplate.reasoning_instruction``);
``default`` (the project's step-by-step instruction, the one the released selectors were trained on) is
measured first unless ``--no-default``. Greedy decoding, batch 1, every question under every instruction; per question
the tokens, seconds and whether the extracted answer is right go to ``--out`` (JSONL beside the JSON
summary, appended as they finish, so an interrupted run resumes). Prints one row per instruction:
questions, median and mean tokens, how many hit the cap, mean seconds, accuracy. Latency levers that
shorten the *small* model's reasoning only pay if the baseline — the large model's own reasoning — cannot
be shortened the same way: this measures both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from selector.agents import Agent
from selector.answers import answers_match, extract_answer
from selector.cmdline import run_command
from selector.data import load_examples
from selector.io import write_json_atomic
from selector.progress import progress_bar
from selector.prompts import PromptTemplate, reasoning_prompt

PROG = "python -m scripts.bench_instructions"


def parse_instructions(items: list[str], default: bool = True) -> dict[str, str]:
    out = {"default": PromptTemplate().reasoning_instruction} if default else {}
    for item in items:
        name, eq, text = item.partition("=")
        if not eq or not name.strip() or not text.strip():
            raise ValueError(f"--instruction takes NAME=TEXT, got {item!r}")
        if name.strip() in out or (name.strip() == "default" and default):
            raise ValueError(
                f"instruction name {name.strip()!r} given twice ('default' is measured unless --no-default)"
            )
        out[name.strip()] = text.strip()
    if not out:
        raise ValueError("nothing to measure: --no-default needs at least one --instruction")
    return out


def summarize(rows: list[dict], cap: int) -> dict:
    tokens = [r["tokens"] for r in rows]
    return {
        "questions": len(rows),
        "median_tokens": statistics.median(tokens),
        "mean_tokens": statistics.fmean(tokens),
        "at_cap": sum(t >= cap for t in tokens),
        "mean_seconds": statistics.fmean(r["seconds"] for r in rows),
        "median_seconds": statistics.median(r["seconds"] for r in rows),
        "accuracy": statistics.fmean(r["correct"] for r in rows),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--model", required=True, help="model folder or hub id")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16, float16 or auto")
    parser.add_argument(
        "--data", required=True, help="questions with gold answers (JSONL, CSV, Parquet, ...)"
    )
    parser.add_argument("--instruction", action="append", default=[], help="NAME=TEXT (repeatable)")
    parser.add_argument(
        "--no-default", action="store_true",
        help="skip the default instruction (when another run on this machine measured it: ratios across runs are noisier)",
    )  # fmt: skip
    parser.add_argument("--max-new-tokens", type=int, default=256, help="cap on reasoning tokens")
    parser.add_argument("--limit", type=int, default=None, help="first N questions only")
    parser.add_argument(
        "--out", required=True, help="summary JSON (per-question rows in OUT.jsonl beside it)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    def body() -> None:
        instructions = parse_instructions(args.instruction, default=not args.no_default)
        if args.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
        examples = load_examples(args.data, limit=args.limit)
        if not examples or any(not ex.answer for ex in examples):
            raise ValueError(f"{args.data!r}: every question needs a gold answer")
        out = Path(args.out)
        rows_path = out.with_suffix(".jsonl")
        done: dict[tuple[str, str], dict] = {}
        if rows_path.exists():
            for line in rows_path.read_text().splitlines():
                if line.strip():
                    r = json.loads(line)
                    if (
                        r.get("model") == args.model
                        and r.get("dtype") == args.dtype
                        and r.get("cap") == args.max_new_tokens
                    ):
                        done[(r["instruction_text"], r["id"])] = r
        agent = Agent.from_pretrained(args.model, dtype=args.dtype)
        rows_path.parent.mkdir(parents=True, exist_ok=True)
        results: dict[str, list[dict]] = {}
        with progress_bar(disable=args.quiet) as bar:
            for name, text in instructions.items():
                task = bar.add_task(name, total=len(examples))
                template = PromptTemplate(reasoning_instruction=text)
                results[name] = []
                for ex in examples:
                    row = done.get((text, ex.id))
                    if row is None:
                        prompt = reasoning_prompt(agent, ex.question, choices=ex.choices, template=template)
                        start = time.perf_counter()
                        gen = agent.generate([prompt.text], max_new_tokens=args.max_new_tokens)[0]
                        seconds = time.perf_counter() - start
                        answer = extract_answer(gen.text)
                        row = {"instruction": name, "instruction_text": text, "id": ex.id, "model": args.model,
                               "dtype": args.dtype, "cap": args.max_new_tokens, "tokens": gen.new_tokens,
                               "seconds": seconds, "answer": answer, "correct": answers_match(answer, ex.answer),
                               "threads": torch.get_num_threads()}  # fmt: skip
                        with rows_path.open("a") as f:
                            f.write(json.dumps(row) + "\n")
                    results[name].append(row)
                    bar.advance(task)
        summary = {
            "model": args.model, "dtype": args.dtype, "data": args.data, "cap": args.max_new_tokens,
            "threads": torch.get_num_threads(), "instructions": instructions,
            "rows": {name: summarize(rows, args.max_new_tokens) for name, rows in results.items()},
        }  # fmt: skip
        write_json_atomic(out, summary)
        print(
            f"{args.model} ({args.dtype}, {summary['threads']} threads), {len(examples)} questions, cap {args.max_new_tokens}"
        )
        print("| instruction | median tokens | mean tokens | at cap | mean s | accuracy |")
        print("|---|---|---|---|---|---|")
        for name, s in summary["rows"].items():
            print(f"| {name} | {s['median_tokens']:.0f} | {s['mean_tokens']:.0f} | {s['at_cap']} | "
                  f"{s['mean_seconds']:.2f} | {s['accuracy']:.1%} |")  # fmt: skip

    return run_command(body, PROG)


if __name__ == "__main__":
    sys.exit(main())
