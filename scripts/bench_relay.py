"""The real-pair relay benchmark of docs/results.md in one command: its data, then `tokenrelay eval`.

    python -m scripts.bench_relay --small models/qwen2.5-coder-0.5b-instruct \\
        --large models/qwen2.5-coder-1.5b-instruct --out runs/eval_relay_real

Writes the 16 reasoning-gym ``simple_equations`` problems (seed 1, at most 3 terms, values up to
30: a task where the 0.5B model's reasoning is usually right, see docs/results.md) to ``--data``
unless it exists, then runs ``tokenrelay eval --config configs/eval_relay_real.yaml`` on them: gates
never / always / agreement with the self-information selector at 25% and the full reasoning,
beside the large model's own step-by-step answer and the small model's own answer, at batch size 1
(per-question latency). Any other option goes to ``tokenrelay eval`` (``--limit 4``, ...). The
eval cache makes an interrupted run resume.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scripts.prepare_data import main as prepare_data
from selector.cli import main as tokenrelay

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "eval_relay_real.yaml"
TASK = ["--task", "simple_equations", "--n", "16", "--seed", "1", "--config", "max_terms=3",
        "--config", "max_value=30"]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", default="data/simple_eq_eval16.jsonl", help="problems file (made if missing)"
    )
    parser.add_argument("--small", required=True, help="the small model folder (Qwen2.5-Coder-0.5B-Instruct)")
    parser.add_argument("--large", required=True, help="the large model folder (Qwen2.5-Coder-1.5B-Instruct)")
    parser.add_argument("--out", default="runs/eval_relay_real", help="eval output folder (and its cache)")
    args, rest = parser.parse_known_args(argv)
    data = Path(args.data)
    if not data.exists():
        data.parent.mkdir(parents=True, exist_ok=True)
        if prepare_data(["reasoning-gym", *TASK, "--out", str(data)]) != 0:
            return 1
    return tokenrelay(
        ["eval", "--config", str(CONFIG), "--data", str(data), "--relay.small", args.small, "--relay.large", args.large,
         "--out", args.out, *rest]
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
