"""Tests for scripts.prepare_data: offline generation loads back through load_examples."""

from __future__ import annotations

import json
from pathlib import Path

from scripts.prepare_data import main
from selector.data import load_examples


def test_reasoning_gym_roundtrip(tmp_path):
    out = tmp_path / "gsm.jsonl"
    assert (
        main(["reasoning-gym", "--task", "gsm_symbolic", "--n", "3", "--seed", "0", "--out", str(out)]) == 0
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["gsm_symbolic-0-0", "gsm_symbolic-0-1", "gsm_symbolic-0-2"]
    assert all(r["task"] == "gsm_symbolic" and r["solution"] for r in rows)
    exs = load_examples(out)
    assert len(exs) == 3 and all(e.answer.lstrip("-").isdigit() for e in exs)

    # an offset gives disjoint ids, and the same (seed, index) gives the same problem
    out2 = tmp_path / "more.jsonl"
    main(["reasoning-gym", "--n", "2", "--offset", "2", "--out", str(out2)])
    more = load_examples(out2)
    assert [e.id for e in more] == ["gsm_symbolic-0-2", "gsm_symbolic-0-3"]
    assert more[0].question == exs[2].question


def test_easy_vqa_roundtrip(tmp_path):
    out = tmp_path / "vqa"
    assert main(["easy-vqa", "--split", "test", "--n", "2", "--with-choices", "--out", str(out)]) == 0
    exs = load_examples(out / "examples.jsonl")
    assert len(exs) == 2 and exs[0].id == "easy_vqa-test-0"
    assert all(len(e.images) == 1 and Path(e.images[0]).is_file() for e in exs)
    assert all(e.answer in e.choices for e in exs)
    assert load_examples(out) == exs  # the folder itself loads too


def test_list_tasks(capsys):
    assert main(["list-tasks"]) == 0
    assert "gsm_symbolic" in capsys.readouterr().out.split()


def test_nearby_seeds_share_items_as_the_help_warns():
    from scripts.prepare_data import reasoning_gym_rows

    a = reasoning_gym_rows("simple_equations", 3, seed=1)
    b = reasoning_gym_rows("simple_equations", 3, seed=2)
    assert [r["question"] for r in a[1:]] == [r["question"] for r in b[:2]]  # why splits use --offset


def test_tag_exclude_and_unique_text_make_text_disjoint_splits(tmp_path, capsys):
    # coin_flip has few templates: ids differ, texts repeat, so splits must be disjoint by text
    evaluation, train = tmp_path / "eval.jsonl", tmp_path / "train.jsonl"
    base = ["reasoning-gym", "--task", "coin_flip", "--seed", "1", "--config", "max_trials=3"]
    main([*base, "--n", "8", "--tag", "t3", "--out", str(evaluation)])
    main(
        [
            *base,
            "--n",
            "40",
            "--offset",
            "8",
            "--tag",
            "t3",
            "--exclude",
            str(evaluation),
            "--unique-text",
            "--out",
            str(train),
        ]
    )
    ev, tr = load_examples(evaluation), load_examples(train)
    assert ev[0].id == "coin_flip_t3-1-0" and tr and all(e.id.startswith("coin_flip_t3-1-") for e in tr)
    assert not {e.question for e in ev} & {e.question for e in tr}
    assert len({e.question for e in tr}) == len(tr)
    assert "dropped" in capsys.readouterr().out


def test_the_command_pins_the_hash_seed_so_set_built_tasks_reproduce(tmp_path):
    """polynomial_multiplication builds its monomials from a set: without a fixed hash seed two processes with the
    same --seed wrote different problems. The command re-runs itself with PYTHONHASHSEED=0 unless one is set."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    outs = []
    for i in range(2):
        out = tmp_path / f"poly{i}.jsonl"
        cmd = [sys.executable, "-m", "scripts.prepare_data", "reasoning-gym", "--task", "polynomial_multiplication",
               "--n", "16", "--seed", "1", "--out", str(out)]  # fmt: skip
        subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
        outs.append(out.read_text())
    assert outs[0] == outs[1] and len(outs[0].splitlines()) == 16
