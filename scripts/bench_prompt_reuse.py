"""Benchmark: the large model's answer from a transfer, prefilled whole vs resumed from its direct prompt.

    python -m scripts.bench_prompt_reuse --records docs/results/latency_simple_eq32/eval_records.jsonl \
        --data data/simple_eq_eval32.jsonl --large models/qwen2.5-coder-1.5b-instruct --out runs/bench_prompt_reuse

The relay's final prompt starts with its direct-answer prompt's tokens (system message, question), so
at batch 1 it resumes from that prompt's KV cache (``RelayConfig.reuse_prompt``) instead of
prefilling it again. For each question a relay run transferred (its transfer text, from a latency or
evaluation run's ``records.jsonl``), in one process and on the same threads: the direct prompt is
generated once (keeping its cache, as the relay's direct stage does), then the transfer prompt is
answered whole and resumed, in alternating order, ``repeats`` times. Prints the median prefill and
answer seconds of each, their ratio, the tokens each prefilled, and whether the answers agree;
writes ``OUT/prompt_reuse.{json,md}``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from selector.agents import Agent
from selector.cmdline import parse_config, run_command
from selector.data import load_examples
from selector.io import write_json_atomic, write_text_atomic
from selector.progress import progress_bar
from selector.prompts import transfer_prompt

PROG = "python -m scripts.bench_prompt_reuse"


@dataclass
class BenchPromptReuseConfig:
    """Whole vs resumed prefill of the relay's final prompt, on transfers a relay run made."""

    records: str | None = None
    """A relay run's per-question records (``records.jsonl`` of `tokenrelay eval` or the latency bench)."""
    data: str | None = None
    """The questions of that run (JSONL with id and question), to rebuild the prompts."""
    large: str | None = None
    """The large model (the one that answered in that run)."""
    condition: str = "confidence"
    """Use the records whose condition contains this text (the first such condition)."""
    limit: int | None = None
    """Use only the first N transferred questions."""
    repeats: int = 3
    """Timed answers per question and variant (alternating which goes first)."""
    answer_tokens: int = 16
    """Cap on answer tokens (as the relay's answer_tokens)."""
    threads: int = 2
    """torch CPU threads."""
    dtype: str = "float32"
    """Weights dtype of the large model."""
    out: str = "runs/bench_prompt_reuse"
    """Output folder."""

    def __post_init__(self) -> None:
        for name in ("records", "data", "large"):
            if not getattr(self, name):
                raise ValueError(f"--{name} is required")
        for name in ("repeats", "answer_tokens", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")


def transfers_of(records: str, condition: str) -> tuple[str, dict[str, str]]:
    """The first condition matching ``condition`` and its transfer text per question id."""
    rows = [json.loads(line) for line in Path(records).read_text().splitlines() if line.strip()]
    names = [r["condition"] for r in rows if condition in r["condition"]]
    if not names:
        raise ValueError(f"no condition containing {condition!r} in {records}")
    name = names[0]
    return name, {
        r["id"]: r["transfer_text"] for r in rows if r["condition"] == name and r.get("transfer_text")
    }


def run_bench(config: BenchPromptReuseConfig, agent: Agent | None = None) -> dict:
    torch.set_num_threads(config.threads)
    condition, transfers = transfers_of(config.records, config.condition)
    examples = [ex for ex in load_examples(config.data) if ex.id in transfers][: config.limit]
    if not examples:
        raise ValueError(f"none of the transferred questions of {condition!r} is in {config.data}")
    agent = agent or Agent.from_pretrained(config.large, dtype=config.dtype, device="cpu")
    rows = []
    with progress_bar() as bar:
        task = bar.add_task("whole vs resumed", total=len(examples))
        for ex in examples:
            direct = transfer_prompt(agent, ex.question, None)
            final = transfer_prompt(agent, ex.question, transfers[ex.id]).text
            kept = agent.generate([direct.text], max_new_tokens=config.answer_tokens, keep_prompt=True)[0]
            timed: dict[str, list] = {"whole": [], "resumed": []}
            for k in range(config.repeats):
                for variant in ("whole", "resumed") if k % 2 == 0 else ("resumed", "whole"):
                    prefix = kept.prompt_cache if variant == "resumed" else None
                    t0 = time.perf_counter()
                    gen = agent.generate([final], max_new_tokens=config.answer_tokens, prefix=prefix)[0]
                    timed[variant].append((gen, time.perf_counter() - t0))
            whole, resumed = timed["whole"][0][0], timed["resumed"][0][0]
            rows.append({
                "id": ex.id, "prompt_tokens": whole.prompt_tokens, "cached_tokens": resumed.cached_tokens,
                "same_answer": whole.token_ids == resumed.token_ids,
                **{f"{v}_prefill_s": statistics.median(g.prefill_s for g, _ in timed[v]) for v in timed},
                **{f"{v}_answer_s": statistics.median(s for _, s in timed[v]) for v in timed},
            })  # fmt: skip
            bar.advance(task)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k.endswith(("_s", "tokens"))}
    return {
        "condition": condition,
        "questions": len(rows),
        "threads": config.threads,
        "config": asdict(config),
        "median": med,
        "prefill_ratio": med["resumed_prefill_s"] / med["whole_prefill_s"],
        "answer_ratio": med["resumed_answer_s"] / med["whole_answer_s"],
        "saved_s_per_transfer": statistics.median(r["whole_answer_s"] - r["resumed_answer_s"] for r in rows),
        "same_answers": sum(r["same_answer"] for r in rows),
        "rows": rows,
    }


def markdown(result: dict) -> str:
    m = result["median"]
    return "\n".join([
        f"{result['questions']} transfers of `{result['condition']}`, batch 1, {result['threads']} torch threads; "
        "medians over questions (each the median of its repeats)",
        "",
        "| variant | prompt tokens prefilled | prefill s | answer s (prefill + decode) |",
        "| --- | --- | --- | --- |",
        f"| whole prompt | {m['prompt_tokens']:.0f} | {m['whole_prefill_s']:.3f} | {m['whole_answer_s']:.3f} |",
        f"| resumed from the direct prompt | {m['prompt_tokens'] - m['cached_tokens']:.0f} | "
        f"{m['resumed_prefill_s']:.3f} | {m['resumed_answer_s']:.3f} |",
        "",
        f"resumed / whole: prefill {result['prefill_ratio']:.2f}, answer {result['answer_ratio']:.2f}; "
        f"median saving {result['saved_s_per_transfer']:.3f} s per transfer; "
        f"identical answers {result['same_answers']}/{result['questions']}",
    ])  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    def body() -> None:
        config = parse_config(BenchPromptReuseConfig, argv, PROG)
        result = run_bench(config)
        out = Path(config.out)
        write_json_atomic(out / "prompt_reuse.json", result)
        write_text_atomic(out / "prompt_reuse.md", "# Prompt reuse\n\n" + markdown(result) + "\n")
        print(markdown(result))
        print(f"\nwritten: {out / 'prompt_reuse.json'}, prompt_reuse.md")

    return run_command(body, PROG)


if __name__ == "__main__":
    sys.exit(main())
