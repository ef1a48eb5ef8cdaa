"""`tokenrelay eval`: run a grid of conditions over a dataset and write the results table and plots.

Every option is checked when the config is read, before any model loads (selectors, budgets,
gates, conditions); the data's columns and a trained selector's fit to the small model are
checked before the first generation. Model outputs are cached under ``OUT/cache``: re-running,
or growing the grid (another budget, selector or gate), computes only what is new.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..cmdline import parse_config, run_command
from ..evaluation import EvalConfig, markdown_table, run_eval
from ..shards import OutputLock

__all__ = ["eval_config", "main"]

PROG = "tokenrelay eval"


def eval_config(path: str) -> EvalConfig:
    """Build the config of a YAML file without running it (tests/test_configs.py)."""
    return parse_config(EvalConfig, ["--config", str(path)], PROG)


def main(argv: Sequence[str]) -> int:
    def body() -> None:
        config = parse_config(EvalConfig, argv, PROG)
        with OutputLock(config.out, "the evaluation folder"):  # a second job would redo the same work
            result = run_eval(config)
        print(markdown_table(result))
        cache = result["cache"]
        computed = sum(cache["misses"].get(k, 0) for k in ("generate", "score", "hidden_states"))
        reused = sum(cache["hits"].get(k, 0) for k in ("generate", "score"))
        print(
            f"\n{result['questions']} questions, {len(result['rows'])} conditions in {result['seconds']:.1f} s "
            f"({computed} model outputs computed, {reused} from the cache); "
            f"full reasoning raises the gold log-prob by >= {result['gain_min_nats']:g} nat on "
            f"{result['full_helps']} problems"
        )
        print(f"results in {Path(config.out) / 'results.md'} (.csv, .json, records.jsonl, plots)")

    return run_command(body, PROG)
