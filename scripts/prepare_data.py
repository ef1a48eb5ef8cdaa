"""Benchmark data from offline packages: reasoning-gym problems and easy-vqa image questions.

Writes files that ``selector.data.load_examples`` reads directly, with stable, unique ids so that
traces, labels and results can be joined across runs.

    python -m scripts.prepare_data reasoning-gym --task gsm_symbolic --n 100 --seed 0 --out data/gsm.jsonl
    python -m scripts.prepare_data easy-vqa --split test --n 50 --out data/easy_vqa/
    python -m scripts.prepare_data list-tasks
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

# Metadata keys that hold a worked (chain-of-thought) solution rather than a structured answer.
SOLUTION_KEYS = ("answer_cot",)
EASY_VQA_SHAPES = ["circle", "rectangle", "triangle"]
EASY_VQA_YES_NO = ["yes", "no"]


def _import_reasoning_gym():
    """Import reasoning_gym quietly: some of its modules warn at import time."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import reasoning_gym
        from reasoning_gym.factory import DATASETS
    return reasoning_gym, DATASETS


def list_tasks() -> list[str]:
    """Names of all reasoning-gym tasks."""
    _, registry = _import_reasoning_gym()
    return sorted(registry)


def _parse_config(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs -> task config kwargs; values parse as JSON when they can (3, 0.5, [1,2])."""
    config = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--config expects KEY=VALUE, got {pair!r}")
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:
            config[key] = value
    return config


def reasoning_gym_rows(
    task: str,
    n: int,
    seed: int = 0,
    offset: int = 0,
    config: dict[str, Any] | None = None,
    tag: str | None = None,
) -> list[dict[str, Any]]:
    """Rows {id, question, answer, task[, solution]} for items offset..offset+n-1 of a seeded task.

    Items depend only on (seed, index), so different offsets give disjoint, stable splits. Different
    seeds do not: reasoning-gym seeds item i with seed + i, so item i of seed s is item i - 1 of seed
    s + 1 (a training set drawn with seed 2 holds most of an evaluation set drawn with seed 1).
    ``tag`` names a task setting in the ids (``{task}_{tag}-{seed}-{index}``): the same (seed, index)
    under other options is another problem, and per-task figures group ids by what precedes
    ``-{seed}-{index}``.
    """
    if tag is not None and (not tag or not all(c.isalnum() or c == "_" for c in tag)):
        raise SystemExit(f"--tag takes letters, digits and '_' only, got {tag!r}")
    rg, registry = _import_reasoning_gym()
    if task not in registry:
        raise SystemExit(f"unknown reasoning-gym task {task!r}; see `list-tasks`")
    dataset = rg.create_dataset(task, size=offset + n, seed=seed, **(config or {}))
    rows = []
    for index in range(offset, offset + n):
        item = dataset[index]
        if item.get("answer") is None:
            raise SystemExit(
                f"task {task!r} has no single gold answer (it is scored by a checker); pick another task"
            )
        row = {
            "id": f"{task}{'_' + tag if tag else ''}-{seed}-{index}",
            "question": item["question"],
            "answer": str(item["answer"]),
            "task": task,
        }
        meta = item.get("metadata") or {}
        solution = next((meta[k] for k in SOLUTION_KEYS if isinstance(meta.get(k), str)), None)
        if solution:
            row["solution"] = solution
        rows.append(row)
    return rows


def _easy_vqa_choices(answer: str, all_answers: list[str]) -> list[str]:
    """Answers of the same kind as the gold one (yes/no, shape, or color)."""
    if answer in EASY_VQA_YES_NO:
        return list(EASY_VQA_YES_NO)
    if answer in EASY_VQA_SHAPES:
        return list(EASY_VQA_SHAPES)
    return sorted(a for a in all_answers if a not in EASY_VQA_YES_NO + EASY_VQA_SHAPES)


def easy_vqa_rows(
    split: str, n: int, out_dir: Path, offset: int = 0, with_choices: bool = False
) -> list[dict[str, Any]]:
    """Copy the images of questions offset..offset+n-1 into out_dir/images and return their rows."""
    import easy_vqa

    if split == "train":
        texts, answers, image_ids = easy_vqa.get_train_questions()
        image_paths = easy_vqa.get_train_image_paths()
    elif split == "test":
        texts, answers, image_ids = easy_vqa.get_test_questions()
        image_paths = easy_vqa.get_test_image_paths()
    else:
        raise SystemExit(f"easy-vqa split must be train or test, got {split!r}")
    all_answers = easy_vqa.get_answers()
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(offset, min(offset + n, len(texts))):
        image_id = image_ids[index]
        rel = f"images/{split}-{image_id}.png"
        target = out_dir / rel
        if not target.exists():
            shutil.copyfile(image_paths[image_id], target)  # the package ships PNGs already
        row = {
            "id": f"easy_vqa-{split}-{index}",
            "question": texts[index],
            "answer": answers[index],
            "image": rel,
            "task": "easy_vqa",
        }
        if with_choices:
            row["choices"] = _easy_vqa_choices(answers[index], all_answers)
        rows.append(row)
    return rows


def _question_texts(paths: list[Path]) -> set[str]:
    texts = set()
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"--exclude: no such file {str(path)!r}")
        with path.open(encoding="utf-8") as fh:
            for k, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        texts.add(json.loads(line)["question"])
                    except (json.JSONDecodeError, KeyError, TypeError):
                        raise SystemExit(
                            f"--exclude: {path}:{k} is not a JSON row with a 'question'"
                        ) from None
    return texts


def filter_rows(
    rows: list[dict[str, Any]], exclude: set[str] = frozenset(), unique_text: bool = False
) -> tuple[list[dict[str, Any]], int, int]:
    """Drop rows whose question text is in ``exclude`` (e.g. an evaluation set: reasoning-gym tasks
    with few templates repeat texts across indices, so disjoint ids do not mean disjoint problems)
    and, with ``unique_text``, later repeats of a text. Returns (kept, excluded, repeats dropped)."""
    kept, seen, excluded, repeats = [], set(), 0, 0
    for row in rows:
        if row["question"] in exclude:
            excluded += 1
        elif unique_text and row["question"] in seen:
            repeats += 1
        else:
            seen.add(row["question"])
            kept.append(row)
    return kept, excluded, repeats


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    """Write rows as JSON lines (creating the folder), and warn about repeated questions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    repeats = sum(c - 1 for c in Counter(r["question"] for r in rows).values() if c > 1)
    if repeats:
        print(f"note: {repeats} repeated question text(s) in {path}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="prepare_data", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    rg = sub.add_parser("reasoning-gym", help="generate problems with reasoning-gym")
    rg.add_argument("--task", default="gsm_symbolic", help="task name (see list-tasks)")
    rg.add_argument("--n", type=int, default=100, help="number of problems")
    rg.add_argument(
        "--seed",
        type=int,
        default=0,
        help="generator seed (part of every id); nearby seeds share items (item i of seed s = item "
        "i-1 of seed s+1): make splits with one seed and --offset. The command runs with PYTHONHASHSEED=0 "
        "unless one is set (some tasks build items from sets), so a seed always writes the same problems",
    )
    rg.add_argument("--offset", type=int, default=0, help="first item index; use for disjoint splits")
    rg.add_argument("--config", action="append", default=[], metavar="KEY=VALUE", help="task option")
    rg.add_argument(
        "--tag",
        default=None,
        help="name of this task setting, put in every id ({task}_{tag}-{seed}-{index}); use it when "
        "--config changes the problems, so that two settings never share ids",
    )
    rg.add_argument(
        "--exclude",
        action="append",
        type=Path,
        default=[],
        metavar="JSONL",
        help="drop problems whose question text is in this file (repeatable): training sets disjoint "
        "by text from an evaluation set",
    )
    rg.add_argument("--unique-text", action="store_true", help="keep the first of repeated question texts")
    rg.add_argument("--out", type=Path, required=True, help="output .jsonl file")

    vqa = sub.add_parser("easy-vqa", help="export easy-vqa image questions")
    vqa.add_argument("--split", choices=["train", "test"], default="test")
    vqa.add_argument("--n", type=int, default=50, help="number of questions")
    vqa.add_argument("--offset", type=int, default=0, help="first question index")
    vqa.add_argument("--with-choices", action="store_true", help="add answer choices of the same kind")
    vqa.add_argument("--out", type=Path, required=True, help="output folder (examples.jsonl + images/)")

    sub.add_parser("list-tasks", help="print reasoning-gym task names")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    if args.command == "list-tasks":
        print("\n".join(list_tasks()))
        return 0
    if args.n < 0 or args.offset < 0:
        raise SystemExit("--n and --offset must be >= 0")
    if args.command == "reasoning-gym":
        rows = reasoning_gym_rows(
            args.task, args.n, args.seed, args.offset, _parse_config(args.config), tag=args.tag
        )
        rows, excluded, repeats = filter_rows(rows, _question_texts(args.exclude), args.unique_text)
        if excluded or repeats:
            print(f"dropped {excluded} problem(s) found in --exclude files, {repeats} repeated text(s)")
        out = args.out
    else:
        rows = easy_vqa_rows(args.split, args.n, args.out, args.offset, args.with_choices)
        out = args.out / "examples.jsonl"
    write_rows(rows, out)
    print(f"wrote {len(rows)} examples to {out}")
    return 0


def pin_hash_seed() -> None:
    """Re-run this command with ``PYTHONHASHSEED=0`` unless a hash seed is set: some reasoning-gym tasks build
    their items from Python sets (polynomial_multiplication's monomials come from sympy's), so without a fixed
    hash seed the same ``--seed`` writes different problems in different processes."""
    if "PYTHONHASHSEED" not in os.environ:
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])  # the same command line, as given


if __name__ == "__main__":
    pin_hash_seed()
    sys.exit(main())
