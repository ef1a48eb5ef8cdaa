"""Trace folders' size on disk and load time (issue 15: hidden states as float32 arrays, not float64 lists).

    python -m scripts.bench_traces /work/runs/trace_size/new=float32 --code after --out docs/results/trace_storage.json
    python -m scripts.bench_traces /work/runs/trace_size/old=float64 --code before --code-dir /tmp/old_code --out ...

For each folder: the bytes of its shards, and the median time (over --repeats) to open it with
``load_traces`` and to turn every trace into a view with its hidden states as a float32 tensor
(``view_from_trace``, what training and labeling do). ``--code-dir`` loads with the ``selector``
package found there instead (e.g. ``git archive`` of the commit before a change), and rows for other
folders or code already in --out are kept, so before and after end up in one table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pyarrow.parquet as pq

COLUMNS = [("label", "folder", "s"), ("code", "code", "s"), ("stored_as", "stored as", "s"),
           ("traces", "traces", "d"), ("tokens", "tokens", "d"), ("width", "width", "d"),
           ("bytes", "bytes", ",d"), ("load_s", "open (s)", ".3f"), ("to_torch_s", "to tensors (s)", ".3f")]  # fmt: skip


def _timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _views(folder: Path) -> list:
    from selector.reasoning import view_from_trace
    from selector.traces import load_traces

    return [view_from_trace(row) for row in load_traces(folder)]


def measure(folder: Path, label: str, code: str, repeats: int) -> dict:
    """One folder's size and median load times with the code importable here."""
    import datasets  # noqa: F401  (registers Array2D, so the schema below names it)

    from selector.traces import load_traces

    files = sorted(folder.glob("shard-*.parquet"))
    kind = pq.read_schema(files[0]).field("hidden_states").type
    stored_as = f"{kind.value_type} Array2D{kind.shape}" if hasattr(kind, "shape") else str(kind)
    load_s, _ = _timed(lambda: load_traces(folder), repeats)
    to_torch_s, views = _timed(lambda: _views(folder), repeats)
    states = [v.hidden_states for v in views if v.hidden_states is not None]
    return {
        "label": label,
        "folder": str(folder),
        "code": code,
        "stored_as": stored_as.replace("element: ", ""),
        "shards": len(files),
        "traces": len(views),
        "tokens": int(sum(s.shape[0] for s in states)),
        "width": int(states[0].shape[1]) if states else 0,
        "bytes": sum(f.stat().st_size for f in files),
        "load_s": load_s,
        "to_torch_s": to_torch_s,
        "repeats": repeats,
        "loadavg_1m": os.getloadavg()[0],
        "checksum": float(np.sum([float(s.double().sum()) for s in states])),
    }


def _code_version() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=root, capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def table(rows: list[dict]) -> str:
    head = "| " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(format(row[key], fmt) for key, _, fmt in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="trace folders, each FOLDER or FOLDER=LABEL")
    parser.add_argument(
        "--code", default=None, help="name of the code doing the loading (default: git describe)"
    )
    parser.add_argument("--code-dir", type=Path, default=None, help="import selector from this folder")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None, help="JSON file to add the rows to")
    args = parser.parse_args(argv)
    code = args.code or _code_version()
    if args.code_dir is not None:
        sys.path.insert(0, str(args.code_dir.resolve()))
    rows = []
    for spec in args.folders:
        folder, _, label = spec.partition("=")
        rows.append(measure(Path(folder), label or Path(folder).name, code, args.repeats))
    if args.out is not None:
        old = json.loads(args.out.read_text())["runs"] if args.out.exists() else []
        fresh = {(r["label"], r["code"]) for r in rows}
        rows = [r for r in old if (r["label"], r["code"]) not in fresh] + rows
        # not selector.io's atomic write: with --code-dir the selector loaded may predate it
        args.out.write_text(json.dumps({"script": "scripts/bench_traces.py", "runs": rows}, indent=2) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
