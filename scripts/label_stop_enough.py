"""Stop labels measured through the relay itself: at which sentence boundary is the small model's
reasoning *enough*, i.e. the relay's answer from the reasoning so far is already the answer it gives
from the whole trace?

    python -m scripts.label_stop_enough --traces runs/real/lab/traces_se3_train \\
        --small models/qwen2.5-coder-0.5b-instruct --large models/qwen2.5-coder-1.5b-instruct \\
        --selector checkpoints/qwen2.5-coder-0.5b-to-1.5b-multitask-pointwise-fallback --budget 0.25 \\
        --out runs/stop_enough/se3.jsonl

``scripts/train_stop_head.py --labels`` reads the output instead of its default gold-free label (the
answer already appears in the text), which stops only once the small model has *written* its answer.
This label asks the large model: at a boundary (exactly where the relay's stream checks,
``selector.stop_head.unit_boundaries``), the relay's own pipeline runs on the prefix — the selector
scores its units, the budget keeps the best, the large model answers from that transfer prompt — and
the boundary is labelled enough when that answer, and the answer at every later boundary, matches
the answer from the whole trace (stopping there or later changes nothing). Boundaries are walked
from the end and the walk stops at the first mismatch, so a trace costs one large-model answer per
boundary after its last change of answer, plus one; identical transfers are answered once.

Traces must carry hidden states at the selector's layer when the selector reads them (``tokenrelay
reason --hidden_layer``). One JSON line per trace; a run resumes where it stopped (traces already in
``--out`` are skipped) and ``--shard I/N`` splits the traces between processes (one per core).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from selector.agent_types import Generation
from selector.answers import answers_match
from selector.cmdline import run_command
from selector.data import Example
from selector.gating import answer_from_generation
from selector.progress import progress_bar
from selector.relay import Relay, RelayConfig
from selector.stop_head import unit_boundaries
from selector.traces import load_traces

PROG = "python -m scripts.label_stop_enough"


def prefix_generation(trace: dict, k: int | None) -> Generation:
    """The trace's first ``k`` reasoning tokens (all with None) as the relay's stream would hand them on."""
    ids = list(trace["reasoning_token_ids"])
    k = len(ids) if k is None else k
    hidden = trace.get("hidden_states")
    gen = Generation(
        text="", token_ids=ids[:k], logprobs=list(trace["reasoning_logprobs"])[:k],
        finish_reason="early_stop" if k < len(ids) else str(trace.get("finish_reason") or "stop"),
        prompt_tokens=int(trace.get("prompt_tokens") or 0), new_tokens=k, prefill_s=0.0, decode_s=0.0,
    )  # fmt: skip
    if hidden is not None and len(hidden):
        gen.hidden_states = torch.as_tensor(hidden[:k]).float()
    return gen


class RelayAnswerer:
    """The relay's stages 4–5 on a given reasoning: select, then the large model's answer (memoized
    per transfer text)."""

    def __init__(self, relay: Relay):
        self.relay = relay
        self.memo: dict[tuple[str, str], str | None] = {}
        self.calls = 0

    def __call__(self, ex: Example, gen: Generation) -> tuple[str | None, str]:
        gen.text = self.relay.small.tokenizer.decode(gen.token_ids, skip_special_tokens=True)
        transfer = self.relay._select(ex, gen)
        key = (ex.id, transfer.text)
        if key not in self.memo:
            out = self.relay._answer_batch([self.relay._prompt(ex, transfer.text)])[0]
            self.memo[key] = answer_from_generation(out.text)
            self.calls += 1
        return self.memo[key], transfer.text


def label_trace(answer_of: RelayAnswerer, trace: dict, tokenizer) -> dict:
    """One trace's record: its boundaries, the answers measured, and the labels."""
    ex = Example(
        str(trace["id"]), trace["question"], str(trace.get("answer") or ""), [], trace.get("choices")
    )
    ids = list(trace["reasoning_token_ids"])
    points = unit_boundaries(tokenizer, ids)
    full, _ = answer_of(ex, prefix_generation(trace, None))
    answers: dict[int, str | None] = {}
    first_enough = len(points)  # index of the first boundary from which every answer matches
    for j in reversed(range(len(points))):
        got, _ = answer_of(ex, prefix_generation(trace, points[j]))
        answers[points[j]] = got
        if full is None or got is None or not answers_match(got, full):
            break
        first_enough = j
    return {
        "id": ex.id, "points": points, "tokens": len(ids), "full_answer": full,
        "answers": {str(k): v for k, v in sorted(answers.items())},
        "labels": [j >= first_enough for j in range(len(points))],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--traces", nargs="+", required=True, help="trace folders (with hidden states)")
    parser.add_argument("--small", required=True, help="the small model (its tokenizer cuts the units)")
    parser.add_argument("--large", required=True, help="the large model that answers")
    parser.add_argument(
        "--selector", required=True, help="the relay's selector (a release folder or heuristic)"
    )
    parser.add_argument("--budget", type=float, default=0.25, help="the relay's budget (share of tokens)")
    parser.add_argument("--dtype", default="bfloat16", help="the large model's dtype (the relay's)")
    parser.add_argument("--answer-tokens", type=int, default=16, help="the large model's answer cap")
    parser.add_argument("--limit", type=int, default=None, help="at most this many traces per folder")
    parser.add_argument("--shard", default="0/1", help="I/N: this process labels every N-th trace from I")
    parser.add_argument("--out", required=True, help="JSON lines, one per trace (resumed when it exists)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    def body() -> None:
        try:
            index, count = (int(x) for x in args.shard.split("/"))
        except ValueError:
            raise ValueError(f"--shard must be I/N, got {args.shard!r}") from None
        if not 0 <= index < count:
            raise ValueError(f"--shard {args.shard}: need 0 <= I < N")
        if args.limit is not None and args.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {args.limit}")
        traces = []
        for folder in args.traces:
            rows = load_traces(folder)
            traces.extend(rows[i] for i in range(min(len(rows), args.limit or len(rows))))
        traces = traces[index::count]
        out = Path(args.out)
        done = set()
        if out.exists():
            done = {json.loads(line)["id"] for line in out.read_text().splitlines() if line.strip()}
        todo = [t for t in traces if str(t["id"]) not in done]
        config = RelayConfig(
            small=args.small, large=args.large, selector=args.selector, budget=args.budget,
            dtype=args.dtype, answer_tokens=args.answer_tokens, batch_size=1, gate="always", device="cpu",
        )  # fmt: skip
        relay = Relay.from_config(config)
        answer_of = RelayAnswerer(relay)
        out.parent.mkdir(parents=True, exist_ok=True)
        with progress_bar(disable=args.quiet) as bar, out.open("a") as sink:
            task = bar.add_task("traces", total=len(todo))
            for trace in todo:
                record = label_trace(answer_of, trace, relay.small.tokenizer)
                sink.write(json.dumps(record) + "\n")
                sink.flush()
                bar.advance(task)
        print(
            f"labelled {len(todo)} traces ({len(done)} already in {out}); {answer_of.calls} large-model answers"
        )

    return run_command(body, PROG)


if __name__ == "__main__":
    sys.exit(main())
