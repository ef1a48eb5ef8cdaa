"""scripts/pool_latency on constructed bench folders: the pooled ratio of means, per-run ratios, refusals."""

from __future__ import annotations

import json

import pytest

from scripts.pool_latency import main, pool


def _run(folder, lever_rows, own_rows, own_in_eval=False):
    (folder / "live").mkdir(parents=True)
    (folder / "live" / "calibrated-0123456789.jsonl").write_text(
        "".join(json.dumps({"id": i, "correct": c, "latency_s": s}) + "\n" for i, c, s in lever_rows)
    )
    # another lever's file beside it is never read as this one
    (folder / "live" / "calibrated+stop=head-9876543210.jsonl").write_text(json.dumps({"id": "x"}) + "\n")
    if own_in_eval:
        (folder / "eval").mkdir()
        rows = [
            {"condition": "large_reasoning", "id": i, "correct": c, "latency_s": s} for i, c, s in own_rows
        ]
        rows.append({"condition": "large_direct", "id": "q0", "correct": True, "latency_s": 0.1})
        (folder / "eval" / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        (folder / "own_eval").mkdir()
        (folder / "own_eval" / "records.jsonl").write_text(
            "".join(json.dumps({"id": i, "correct": c, "latency_s": s}) + "\n" for i, c, s in own_rows)
        )


def test_pooled_ratio_is_the_ratio_of_means_over_all_questions(tmp_path, capsys):
    _run(tmp_path / "a", [("q0", True, 1.0), ("q1", True, 3.0)], [("q1", False, 10.0), ("q0", True, 10.0)])
    _run(
        tmp_path / "b",
        [("q0", False, 2.0), ("q1", True, 2.0)],
        [("q0", True, 30.0), ("q1", True, 30.0)],
        True,
    )
    result = pool([tmp_path / "a", tmp_path / "b"], "calibrated")
    assert result["questions"] == 4
    assert [r["ratio"] for r in result["runs"]] == pytest.approx([0.2, 4 / 60])
    assert result["ratio"] == pytest.approx(8 / 80)  # not the mean of the two runs' ratios
    assert result["accuracy"] == 0.75 and result["own_accuracy"] == 0.75
    acc = result["accuracy_vs_own"]
    assert (acc["wins"], acc["losses"], acc["ties"]) == (1, 1, 2)
    low, high = result["ratio_ci"]
    assert low <= result["ratio"] <= high
    assert (
        main(
            [
                str(tmp_path / "a"),
                str(tmp_path / "b"),
                "--lever",
                "calibrated",
                "--out",
                str(tmp_path / "p.json"),
            ]
        )
        == 0
    )
    assert "pooled 4 questions" in capsys.readouterr().out
    assert json.loads((tmp_path / "p.json").read_text())["ratio"] == pytest.approx(0.1)


def test_refusals(tmp_path, capsys):
    _run(tmp_path / "a", [("q0", True, 1.0)], [("q9", True, 10.0)])
    assert main([str(tmp_path / "a"), "--lever", "calibrated"]) == 2
    assert "no own-reasoning record" in capsys.readouterr().err
    assert main([str(tmp_path / "a"), "--lever", "sequential"]) == 2
    assert "expected one live file" in capsys.readouterr().err
