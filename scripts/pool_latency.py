"""Pool a latency lever over several runs of ``scripts.bench_latency`` (different question samples).

    python -m scripts.pool_latency runs/bench_latency_half_stop runs/bench_latency_half_se3rep_stop \\
        --lever calibrated+stop=head --out runs/pooled.json

One sample of 32 questions gives the latency ratio to ±0.06 or so; pooling samples measured the same way
(same machine and protocol: say so when you quote it) narrows it. Per question it reads the lever's live
results (``OUT/live/LEVER-*.jsonl``; exactly one such file per folder) and the large model's own
reasoning (``OUT/own_eval/records.jsonl``, or the ``large_reasoning`` rows of ``OUT/eval/records.jsonl``),
pairs them by question id, and reports over all pooled questions: mean seconds of each, the ratio of the
means with a bootstrap 95% interval (questions resampled), and accuracy of each with the paired
difference, its interval and wins / losses / ties (``scripts.latency_report.paired_with_own``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from selector.cmdline import run_command
from selector.io import write_json_atomic

from .latency_report import paired_with_own

PROG = "python -m scripts.pool_latency"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_run(folder: Path, lever: str) -> tuple[list[tuple], list[tuple], list[str]]:
    """(lever rows, own rows, ids) of one bench folder, as (correct, seconds) pairs in the same order."""
    live = sorted((folder / "live").glob(f"{lever}-*.jsonl"))
    live = [p for p in live if p.name[: -len(".jsonl")].rsplit("-", 1)[0] == lever]
    if len(live) != 1:
        found = ", ".join(p.name for p in live) or "none"
        raise ValueError(f"{folder}: expected one live file for lever {lever!r}, found {found}")
    own_path = folder / "own_eval" / "records.jsonl"
    if own_path.exists():
        own = {r["id"]: r for r in _jsonl(own_path)}
    else:
        eval_path = folder / "eval" / "records.jsonl"
        if not eval_path.exists():
            raise FileNotFoundError(
                f"{folder}: no own_eval/ or eval/ records of the large model's own reasoning"
            )
        own = {r["id"]: r for r in _jsonl(eval_path) if r["condition"] == "large_reasoning"}
    rows = _jsonl(live[0])
    missing = [r["id"] for r in rows if r["id"] not in own]
    if missing:
        raise ValueError(
            f"{folder}: {len(missing)} questions of the lever have no own-reasoning record ({missing[0]})"
        )
    return ([(r["correct"], r["latency_s"]) for r in rows], [(own[r["id"]]["correct"], own[r["id"]]["latency_s"]) for r in rows],
            [f"{folder.name}/{r['id']}" for r in rows])  # fmt: skip


def pool(folders: list[Path], lever: str) -> dict:
    row, own, ids, per_run = [], [], [], []
    for folder in folders:
        r, o, i = load_run(folder, lever)
        per_run.append({"folder": str(folder), "questions": len(r),
                        "ratio": sum(s for _, s in r) / max(sum(s for _, s in o), 1e-12)})  # fmt: skip
        row, own, ids = row + r, own + o, ids + i
    mean = sum(s for _, s in row) / len(row)
    own_mean = sum(s for _, s in own) / len(own)
    return {
        "lever": lever, "questions": len(row), "runs": per_run,
        "mean_s": mean, "own_mean_s": own_mean, "ratio": mean / max(own_mean, 1e-12),
        "accuracy": sum(bool(c) for c, _ in row) / len(row), "own_accuracy": sum(bool(c) for c, _ in own) / len(own),
        **paired_with_own(row, own),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("folders", nargs="+", help="bench_latency output folders (one per question sample)")
    parser.add_argument(
        "--lever", required=True, help="the live lever to pool, as named in the bench's levers"
    )
    parser.add_argument("--out", default=None, help="write the pooled figures here (JSON)")
    args = parser.parse_args(argv)

    def body() -> None:
        result = pool([Path(f) for f in args.folders], args.lever)
        for run in result["runs"]:
            print(f"{run['folder']}: {run['questions']} questions, ratio {run['ratio']:.3f}")
        low, high = result["ratio_ci"]
        acc = result["accuracy_vs_own"]
        print(f"pooled {result['questions']} questions: {result['mean_s']:.2f} s / {result['own_mean_s']:.2f} s = "
              f"{result['ratio']:.3f} [{low:.3f}, {high:.3f}]; accuracy {result['accuracy']:.1%} vs the large model's own "
              f"{result['own_accuracy']:.1%} (wins / losses / ties {acc['wins']}/{acc['losses']}/{acc['ties']})")  # fmt: skip
        if args.out:
            write_json_atomic(Path(args.out), result)

    return run_command(body, PROG)


if __name__ == "__main__":
    sys.exit(main())
