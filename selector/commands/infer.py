"""`tokenrelay infer`: run the relay on one question or on a dataset (results as resumable JSONL).

All options are checked when the config is read, before any model loads: budget, gate, selector
name, and for a single question its image file. The relay's options are one nested ``RelayConfig``
(``--relay.budget 0.5``, a ``relay:`` block in YAML); the rest say what to answer and where to write.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..cmdline import parse_config, run_command
from ..data import ColumnMap, Example, load_examples
from ..relay import STAGES, Relay, RelayConfig, RelayResult, check_images
from ..shards import OutputLock, read_jsonl_output

__all__ = ["InferConfig", "infer_config", "main", "run_infer"]

PROG = "tokenrelay infer"


@dataclass
class InferConfig:
    """`tokenrelay infer`: the large model answers, from the small model's key reasoning when necessary."""

    relay: RelayConfig = field(default_factory=RelayConfig)
    """The relay: models, selector, budget, gate, tokens, device (--relay.KEY, or a `relay:` block in YAML)."""
    question: str | None = None
    """One question to answer (or use --data)."""
    image: str | None = None
    """An image file for --question (needs vision-language models)."""
    choices: list[str] | None = None
    """Answer choices for --question."""
    data: str | None = None
    """Questions to answer: a JSONL / CSV / Parquet file, a save_to_disk folder or a hub id."""
    out: str | None = None
    """JSONL file for the results (needed with --data); re-running skips ids already in it."""
    limit: int | None = None
    """Use only the first N examples of --data."""
    split: str | None = None
    """Split to read from a DatasetDict folder or hub dataset."""
    columns: ColumnMap = field(default_factory=ColumnMap)
    """Column names in the data."""

    def __post_init__(self) -> None:
        if (self.question is None) == (self.data is None):
            raise ValueError("give exactly one of --question TEXT or --data FILE")
        if self.question is not None and not self.question.strip():
            raise ValueError("--question is empty")
        if self.data is not None and self.out is None:
            raise ValueError("--data needs --out FILE.jsonl for the results")
        if self.image is not None:
            if self.question is None:
                raise ValueError("--image goes with --question (a dataset names its images in a column)")
            if not Path(self.image).expanduser().exists():
                raise FileNotFoundError(f"image file {self.image!r} does not exist")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if self.relay.large is None:
            raise ValueError("--relay.large is required (the answering model)")
        if self.relay.small is None and self.relay.gate != "never":
            raise ValueError(f"--relay.small is required with gate {self.relay.gate!r}")


def infer_config(path: str) -> InferConfig:
    """Build the config of a YAML file without running it (tests/test_configs.py)."""
    return parse_config(InferConfig, ["--config", str(path)], PROG)


def _summary(results: Sequence[RelayResult]) -> str:
    n = len(results)
    transferred = sum(r.path == "transfer" for r in results)
    lines = [f"{n} questions; {transferred} answered from a transfer"]
    graded = [r for r in results if r.correct is not None]
    if graded:
        acc = sum(r.correct for r in graded) / len(graded)
        leak = sum(bool(r.leaked) for r in graded) / len(graded)
        lines.append(
            f"accuracy {acc:.3f} on {len(graded)} with gold answers (transfer states the gold: {leak:.3f})"
        )
    stage = {
        s: statistics.fmean(r.stages[s].seconds if s in r.stages else 0.0 for r in results) for s in STAGES
    }
    lines.append(
        "mean seconds: "
        + ", ".join(f"{k} {v:.2f}" for k, v in stage.items())
        + f"; end-to-end {statistics.fmean(r.latency_s for r in results):.2f}"
    )
    return "\n".join(lines)


def _done_ids(out: Path) -> set[str]:
    done = set()
    for number, record in enumerate(read_jsonl_output(out), 1):
        if "id" not in record:
            raise ValueError(
                f"{out}: record {number} has no 'id'; is this a `tokenrelay infer` results file?"
            )
        done.add(str(record["id"]))
    return done


def run_infer(config: InferConfig, relay: Relay | None = None) -> list[RelayResult]:
    """Answer the question or the dataset's examples; dataset results are appended to ``config.out``.

    A dataset run holds a lock on ``config.out`` (taken before any data or model loads): a second job
    on the same file stops at once instead of writing every answer twice.
    """
    if config.data is None or config.out is None:
        return _run_infer(config, relay)
    with OutputLock(config.out, "the results file"):
        return _run_infer(config, relay)


def _run_infer(config: InferConfig, relay: Relay | None) -> list[RelayResult]:
    if config.question is not None:
        images = [str(Path(config.image).expanduser().resolve())] if config.image else []
        examples = [Example("question", config.question, "", images, config.choices)]
    else:
        examples = load_examples(
            config.data, config.columns, split=config.split, limit=config.limit, require_answer=False
        )
    check_images(examples)
    out = Path(config.out) if config.out else None
    if out is not None and config.data is not None:
        done = _done_ids(out)
        examples = [ex for ex in examples if ex.id not in done]
    if not examples:
        return []
    relay = relay or Relay.from_config(config.relay)
    results: list[RelayResult] = []
    size = config.relay.batch_size
    for start in range(0, len(examples), size):  # write after each batch: an interrupted run resumes
        batch = relay.run(examples[start : start + size], progress=len(examples) > size)
        results.extend(batch)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("a") as f:
                for r in batch:
                    f.write(json.dumps(r.to_record()) + "\n")
    return results


def main(argv: Sequence[str]) -> int:
    def body() -> None:
        config = parse_config(InferConfig, argv, PROG)
        results = run_infer(config)
        if config.question is not None:
            r = results[0]
            print(r.answer if r.answer is not None else "(no answer)")
            how = f"from a transfer of {r.transfer_tokens}/{r.reasoning_tokens} reasoning tokens"
            print(f"[{how if r.path == 'transfer' else 'direct answer'}; {r.latency_s:.2f}s]")
            if r.transfer_text:
                print(f"transfer: {r.transfer_text}")
        elif not results:
            print(f"nothing to do: every example already has a result in {config.out}")
        else:
            print(_summary(results))
            print(f"results appended to {config.out}")

    return run_command(body, PROG)
