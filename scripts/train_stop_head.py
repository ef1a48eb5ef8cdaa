"""Train the early-stop ``head`` signal: a linear probe that tells, at a sentence boundary of the small
model's reasoning, whether the reasoning already states the answer it will end with.

    python -m scripts.train_stop_head --traces runs/real/lab/traces_se3_train runs/real/lab/traces_se2_train \\
        --small-model models/qwen2.5-coder-0.5b-instruct --out checkpoints/NAME-stop-head

Reads traces written by ``tokenrelay reason`` with hidden states (``--hidden_layer``; the layer is given
here as ``--hidden-layer``), no large model. Boundaries are exactly where the relay's stream checks
(``selector.stop_head.unit_boundaries``); a boundary is labelled done when the text so far already
contains the trace's own final answer (gold-free), or, with ``--labels``, as measured through the relay
by ``scripts/label_stop_enough.py`` (done once the relay's answer from the prefix is settled on its answer
from the whole trace: it may stop before the answer is written; traces done from their first boundary are left
out, since their answer never depended on the reasoning). Splits traces by id (``--val-fraction``),
reports per task on the validation traces: AUROC, and at each threshold the share of traces stopped before
they are done (premature), the share stopped, and the mean share of reasoning tokens saved; then fits on all
traces and writes the release folder (config.json, model.safetensors, README.md with those figures).
``--leave-one-task-out`` adds the same figures for each task fitted on the other tasks only (does the head
carry to a task it never saw?). An existing output folder is never overwritten.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from selector.cmdline import run_command
from selector.io import write_json_atomic
from selector.progress import progress_bar
from selector.stop_head import StopHead, answer_stated_labels, unit_boundaries
from selector.traces import load_traces
from training.datamodule import split_of, task_of

from .summarize_evals import auroc

THRESHOLDS = (0.5, 0.8, 0.9, 0.95)

PROG = "python -m scripts.train_stop_head"


def read_labels(paths: list[str]) -> dict[str, dict]:
    """Per trace id, a ``scripts/label_stop_enough.py`` record (its boundaries and labels)."""
    records: dict[str, dict] = {}
    for path in paths:
        for n, line in enumerate(Path(path).read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                records[str(rec["id"])] = {"points": list(rec["points"]), "labels": list(rec["labels"])}
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{n}: not a stop-label record ({err})") from None
    if not records:
        raise ValueError(f"no stop-label records in {', '.join(paths)}")
    return records


def boundary_data(
    folders: list[str], tokenizer, progress: bool = True, measured: dict[str, dict] | None = None
) -> dict:
    """States, labels, trace ids and (kept, total) tokens of every boundary of every trace. With
    ``measured`` (``read_labels``), only the traces it labels, with its labels."""
    states, labels, ids, where = [], [], [], []
    traces = [t for f in folders for t in load_traces(f)]
    if measured is not None:
        # A trace done at every boundary never needed its reasoning (the large model's answer is the same
        # without it, or the selector sends nothing): it says nothing about when reasoning is enough.
        traces = [t for t in traces if str(t["id"]) in measured and not all(measured[str(t["id"])]["labels"])]
        if not traces:
            raise ValueError(
                "none of the labelled traces is in these trace folders (or each is done throughout)"
            )
    with progress_bar(disable=not progress) as bar:
        task = bar.add_task("boundaries", total=len(traces))
        for t in traces:
            hidden = t.get("hidden_states")
            if hidden is None or len(hidden) == 0:
                if t["reasoning_token_ids"]:
                    raise ValueError(
                        f"trace {t['id']!r} has no hidden states: write traces with `tokenrelay reason --hidden_layer L`"
                    )
                continue
            token_ids = list(t["reasoning_token_ids"])
            points = unit_boundaries(tokenizer, token_ids)
            if measured is None:
                marks = answer_stated_labels(tokenizer, token_ids, points, t.get("small_answer"))
            else:
                rec = measured[str(t["id"])]
                if rec["points"] != points or len(rec["labels"]) != len(points):
                    raise ValueError(
                        f"trace {t['id']!r}: the labels' boundaries are not this tokenizer's: "
                        "label and train with the same small model"
                    )
                marks = rec["labels"]
            for k, y in zip(points, marks):
                states.append(np.asarray(hidden[k - 1], dtype=np.float32))
                labels.append(y)
                ids.append(str(t["id"]))
                where.append((k, len(token_ids)))
            bar.advance(task)
    if not states:
        raise ValueError("no sentence boundaries in these traces: nothing to train on")
    return {"x": torch.tensor(np.stack(states)), "y": torch.tensor(labels, dtype=torch.float32),
            "ids": ids, "where": where}  # fmt: skip


def stop_figures(probs: np.ndarray, data: dict, rows: list[int], threshold: float) -> dict:
    """Per trace, stop at the first boundary reaching ``threshold`` (as the relay does)."""
    traces: dict[str, list] = {}
    for r, p in zip(rows, probs):
        traces.setdefault(data["ids"][r], []).append((data["where"][r], bool(data["y"][r] > 0.5), float(p)))
    premature = stopped = 0
    saved = 0.0
    for points in traces.values():
        hit = next((pt for pt in sorted(points) if pt[2] >= threshold), None)
        if hit is not None:
            stopped += 1
            premature += not hit[1]
            saved += 1 - hit[0][0] / hit[0][1]
    n = max(len(traces), 1)
    return {
        "traces": len(traces),
        "premature": premature / n,
        "stopped": stopped / n,
        "tokens_saved": saved / n,
    }


def _held_out_probs(
    data: dict, fit: list[int], held: list[int], hidden_size: int, hidden_layer: int
) -> np.ndarray:
    """Stop probabilities of the ``held`` boundaries from a head fitted on the ``fit`` ones."""
    head = StopHead(hidden_size, hidden_layer)
    head.fit(data["x"][fit], data["y"][fit])
    with torch.no_grad():
        return head(data["x"][held]).numpy()


def _report_row(task: str, probs: np.ndarray, data: dict, rows: list[int]) -> dict:
    """One table row: boundaries, share done, AUROC, and the stop figures at each threshold."""
    labels = data["y"][rows]
    row = {"task": task, "boundaries": len(rows), "done_share": float(labels.mean()),
           "auroc": auroc(probs.tolist(), (labels > 0.5).tolist())}  # fmt: skip
    for t in THRESHOLDS:
        row[f"at_{t}"] = stop_figures(probs, data, rows, t)
    return row


def validation_table(data: dict, val_fraction: float, hidden_size: int, hidden_layer: int) -> list[dict]:
    """Fit on the training split, report each task's validation traces (and all of them)."""
    split = [split_of(i, val_fraction) for i in data["ids"]]
    train = [r for r, s in enumerate(split) if s == "train"]
    val = [r for r, s in enumerate(split) if s == "val"]
    if not train or not val:
        raise ValueError(
            "the split left no training or no validation traces: change --val-fraction or add traces"
        )
    probs = _held_out_probs(data, train, val, hidden_size, hidden_layer)
    groups: dict[str, list[int]] = {}
    for j, r in enumerate(val):
        groups.setdefault(task_of(data["ids"][r]) or "all", []).append(j)
    if len(groups) > 1:
        groups["all"] = list(range(len(val)))
    return [_report_row(task, probs[js], data, [val[j] for j in js]) for task, js in groups.items()]


def leave_one_task_out(data: dict, hidden_size: int, hidden_layer: int) -> list[dict]:
    """Per task: fitted on every other task's traces, evaluated on all of this task's: does the head
    carry to a task it never saw?"""
    tasks = [task_of(i) or "all" for i in data["ids"]]
    names = sorted(set(tasks))
    if len(names) < 2:
        raise ValueError("leaving a task out needs traces of at least two tasks (ids {task}-{seed}-{index})")
    table = []
    for name in names:
        fit = [r for r, t in enumerate(tasks) if t != name]
        held = [r for r, t in enumerate(tasks) if t == name]
        if not 0 < float(data["y"][fit].mean()) < 1:
            continue
        probs = _held_out_probs(data, fit, held, hidden_size, hidden_layer)
        table.append(_report_row(name, probs, data, held))
    return table


def format_table(table: list[dict]) -> str:
    head = "| task | val traces | boundaries | done | AUROC | " + " | ".join(
        f"≥{t}: premature / stopped / saved" for t in THRESHOLDS
    )
    lines = [head + " |", "|" + "---|" * (5 + len(THRESHOLDS))]
    for r in table:
        a = "–" if r["auroc"] is None else f"{r['auroc']:.3f}"
        cells = [f"{r[f'at_{t}']['premature']:.2f} / {r[f'at_{t}']['stopped']:.2f} / "
                 f"{r[f'at_{t}']['tokens_saved']:.2f}" for t in THRESHOLDS]  # fmt: skip
        lines.append(f"| {r['task']} | {r['at_0.5']['traces']} | {r['boundaries']} | {r['done_share']:.2f} | {a} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--traces", nargs="+", required=True, help="trace folders with hidden states")
    parser.add_argument("--small-model", required=True, help="the small model (its tokenizer cuts the units)")
    parser.add_argument(
        "--hidden-layer", type=int, default=-1, help="the layer the traces' hidden states are from"
    )
    parser.add_argument(
        "--val-fraction", type=float, default=0.2, help="share of traces (by id) for validation"
    )
    parser.add_argument(
        "--threshold", type=float, default=0.9, help="the stop probability the card recommends"
    )
    parser.add_argument("--out", required=True, help="release folder to write (must not exist)")
    parser.add_argument(
        "--leave-one-task-out", action="store_true",
        help="also fit once per task on the other tasks and report that task (validation_lofo.json)",
    )  # fmt: skip
    parser.add_argument(
        "--labels", nargs="+", default=None,
        help="stop labels measured through the relay (scripts/label_stop_enough.py); default: the "
        "gold-free label (the reasoning so far contains the trace's own final answer)",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    def body() -> None:
        out = Path(args.out)
        if out.exists() and any(out.iterdir()):
            raise ValueError(
                f"{str(out)!r} exists and is not empty: choose a new --out (nothing is overwritten)"
            )
        if not 0 < args.val_fraction < 1:
            raise ValueError(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
        if not 0 < args.threshold < 1:
            raise ValueError(f"--threshold must be in (0, 1), got {args.threshold}")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.small_model)
        measured = read_labels(args.labels) if args.labels else None
        data = boundary_data(args.traces, tokenizer, progress=not args.quiet, measured=measured)
        hidden_size = int(data["x"].shape[1])
        table = validation_table(data, args.val_fraction, hidden_size, args.hidden_layer)
        print(format_table(table))
        lofo = None
        if args.leave_one_task_out:
            lofo = leave_one_task_out(data, hidden_size, args.hidden_layer)
            print("\nEach task left out of the fit:\n" + format_table(lofo))
        card = {
            "trained on": f"{len(set(data['ids']))} traces, {len(data['ids'])} boundaries, from "
            + ", ".join(Path(f).name for f in args.traces),
            "label": (
                "done = the relay's answer from the reasoning so far, and from every later boundary, is its "
                "answer from the whole trace (measured: "
                + ", ".join(Path(p).name for p in args.labels)
                + "; traces done from their first boundary left out)"
                if args.labels
                else "done = the reasoning so far contains the trace's own final answer (gold-free)"
            ),
            "validation (fitted on the other traces, by id)": "\n\n" + format_table(table),
        }
        if lofo is not None:
            card["each task left out of the fit (a task never seen)"] = "\n\n" + format_table(lofo)
        head = StopHead(hidden_size, args.hidden_layer, Path(args.small_model).name, args.threshold, card)
        head.fit(data["x"], data["y"])
        head.save_pretrained(out)
        write_json_atomic(out / "validation.json", table)
        if lofo is not None:
            write_json_atomic(out / "validation_lofo.json", lofo)
        print(f"wrote {out}")

    return run_command(body, PROG)


if __name__ == "__main__":
    sys.exit(main())
