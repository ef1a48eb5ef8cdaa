"""The first pipeline stage: the small model reasons over a dataset and its traces are saved.

A trace is an example plus the small model's reasoning (text, token ids, per-token log-probs),
its extracted final answer and timings, written as resumable Parquet shards (``selector.shards``);
hidden states (``--hidden_layer``) are stored as float32 arrays and load as numpy arrays.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .agents import Agent, Generation
from .answers import answers_match, extract_answer
from .data import ColumnMap, Example, load_examples
from .progress import progress_bar
from .prompts import PromptTemplate, reasoning_prompt
from .reasoning import answer_free_length
from .shards import ShardWriter, read_records

__all__ = [
    "ReasonConfig",
    "load_traces",
    "reason_batch",
    "run_reason",
    "strip_answer_from_trace",
    "trace_record",
]


@dataclass
class ReasonConfig:
    """`tokenrelay reason`: the small model writes reasoning traces for a dataset."""

    data: str
    """Examples: a JSONL / CSV / Parquet file, a save_to_disk folder or a hub id."""
    model: str
    """The small model: a local folder or hub id."""
    out: str
    """Output folder for the traces (Parquet shards); re-running skips ids already there."""
    limit: int | None = None
    """Use only the first N examples."""
    batch_size: int = 4
    """Prompts generated together (left padding); a shard is written after each batch."""
    max_new_tokens: int = 256
    """Cap on reasoning length; traces cut there are recorded with finish_reason='length'."""
    dtype: str = "float32"
    """Model dtype: float32, bfloat16, float16 or auto."""
    device: str = "auto"
    """cpu, cuda, cuda:N or auto."""
    do_sample: bool = False
    """Sample instead of greedy decoding."""
    temperature: float = 0.7
    """Sampling temperature (with do_sample)."""
    top_p: float = 0.95
    """Nucleus sampling mass (with do_sample)."""
    seed: int = 0
    """Seed for sampling (each batch is seeded with seed + its first example's position)."""
    hidden_layer: int | None = None
    """Also store the small model's hidden states of the reasoning tokens at this layer."""
    keep_answer_line: bool = False
    """Keep the final answer line in ``reasoning`` (by default it moves to ``answer_line``: the
    relay transfers reasoning, not the small model's answer; see selector.reasoning.answer_free_length)."""
    split: str | None = None
    """Split to read from a DatasetDict folder or hub dataset."""
    columns: ColumnMap = field(default_factory=ColumnMap)
    """Column names in the data."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if not 0 < self.top_p <= 1 or self.temperature <= 0:
            raise ValueError("need 0 < top_p <= 1 and temperature > 0")


def _image_paths(example: Example, image_dir: Path) -> list[str]:
    """Trace records keep image paths; in-memory images are saved once as PNG."""
    paths = []
    for k, image in enumerate(example.images):
        if isinstance(image, (str, os.PathLike)):
            paths.append(str(Path(image).resolve()))
            continue
        image_dir.mkdir(parents=True, exist_ok=True)
        path = image_dir / f"{example.id}-{k}.png"
        if not path.exists():
            image.save(path)
        paths.append(str(path.resolve()))
    return paths


def trace_record(
    example: Example,
    prompt: str,
    gen: Generation,
    model: str,
    images: list[str],
    tokenizer=None,
) -> dict:
    """The Trace contract (DESIGN.md) as a flat, Parquet-friendly dict.

    With the small model's ``tokenizer`` the final answer line is cut from ``reasoning`` (and its
    token signals) into ``answer_line``; ``small_answer`` always comes from the whole text and
    ``new_tokens`` counts every generated token.
    """
    small_answer = extract_answer(gen.text)
    record = {
        "id": example.id,
        "question": example.question,
        "answer": example.answer,
        "images": images,
        "choices": list(example.choices) if example.choices else None,
        "prompt": prompt,
        "reasoning": gen.text,
        "reasoning_token_ids": gen.token_ids,
        "reasoning_logprobs": gen.logprobs,
        "small_answer": small_answer,
        "small_correct": answers_match(small_answer, example.answer) if example.answer else None,
        "finish_reason": gen.finish_reason,
        "prompt_tokens": gen.prompt_tokens,
        "new_tokens": gen.new_tokens,
        "prefill_s": gen.prefill_s,
        "decode_s": gen.decode_s,
        "model": model,
    }
    if gen.hidden_states is not None:
        record["hidden_states"] = gen.hidden_states.detach().float().cpu().numpy()
    return strip_answer_from_trace(record, tokenizer) if tokenizer is not None else record


def strip_answer_from_trace(record: dict, tokenizer) -> dict:
    """A trace record whose ``reasoning`` stops before its final answer line (moved to ``answer_line``).

    Token ids, log-probs and hidden states are cut to the kept tokens; ``small_answer``,
    ``small_correct`` and ``new_tokens`` (what generation cost) are unchanged. Idempotent.
    """
    ids = list(record["reasoning_token_ids"])
    k, text = answer_free_length(tokenizer, ids, record["reasoning"])
    out = dict(record)
    if k == len(ids):
        out.setdefault("answer_line", "")
        return out
    out["answer_line"] = record["reasoning"][len(text) :]
    out["reasoning"] = text
    out["reasoning_token_ids"] = ids[:k]
    out["reasoning_logprobs"] = list(record["reasoning_logprobs"])[:k]
    if record.get("hidden_states") is not None:
        out["hidden_states"] = record["hidden_states"][:k]
    return out


def reason_batch(
    agent: Agent,
    examples: Sequence[Example],
    *,
    template: PromptTemplate | None = None,
    max_new_tokens: int = 256,
    **generate_kwargs,
) -> tuple[list[str], list[Generation]]:
    """The small model's prompts and reasoning for a batch of examples (for `reason` and the relay)."""
    prompts = [
        reasoning_prompt(agent, ex.question, choices=ex.choices, images=ex.images, template=template)
        for ex in examples
    ]
    gens = agent.generate(
        [p.text for p in prompts],
        images=[p.images for p in prompts],
        max_new_tokens=max_new_tokens,
        **generate_kwargs,
    )
    return [p.text for p in prompts], gens


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def run_reason(config: ReasonConfig, agent: Agent | None = None) -> dict:
    """Write traces for every example not already in ``config.out``; returns a summary."""
    examples = load_examples(config.data, config.columns, split=config.split, limit=config.limit)
    writer = ShardWriter(config.out, exclusive=True)
    try:
        return _write_traces(config, examples, writer, agent)
    finally:
        writer.close()


def _write_traces(config: ReasonConfig, examples: list, writer: ShardWriter, agent: Agent | None) -> dict:
    todo = [ex for ex in examples if ex.id not in writer.done]
    summary = {
        "examples": len(examples),
        "already_done": len(examples) - len(todo),
        "written": 0,
        "truncated": 0,
    }
    if not todo:
        return summary
    agent = agent or Agent.from_pretrained(config.model, dtype=config.dtype, device=config.device)
    with_image = next((ex for ex in todo if ex.images), None)
    if with_image is not None and not agent.supports_images:
        raise ValueError(f"example {with_image.id!r} has an image but {config.model!r} is a text-only model")
    image_dir = Path(config.out) / "images"
    with progress_bar() as bar:
        task = bar.add_task("reasoning", total=len(todo))
        for offset, batch in zip(range(0, len(todo), config.batch_size), _batches(todo, config.batch_size)):
            prompts, gens = reason_batch(
                agent,
                batch,
                max_new_tokens=config.max_new_tokens,
                do_sample=config.do_sample,
                temperature=config.temperature,
                top_p=config.top_p,
                seed=config.seed + offset if config.do_sample else None,
                hidden_layer=config.hidden_layer,
            )
            records = [
                trace_record(
                    ex,
                    prompt,
                    gen,
                    config.model,
                    _image_paths(ex, image_dir),
                    tokenizer=None if config.keep_answer_line else agent.tokenizer,
                )
                for ex, prompt, gen in zip(batch, prompts, gens)
            ]
            writer.write(records)
            summary["written"] += len(records)
            summary["truncated"] += sum(g.finish_reason == "length" for g in gens)
            bar.advance(task, len(batch))
    if summary["truncated"]:
        warnings.warn(
            f"{summary['truncated']} of {summary['written']} traces hit max_new_tokens={config.max_new_tokens}; "
            "they are recorded with finish_reason='length'",
            stacklevel=3,
        )
    return summary


def load_traces(path: str | os.PathLike):
    """A traces folder written by `tokenrelay reason` as a ``datasets.Dataset``; rows give
    ``hidden_states`` as float32 numpy arrays (folders written as float64 lists are cast on load)."""
    return read_records(path)
