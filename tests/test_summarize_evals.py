"""scripts.summarize_evals over real tiny-model eval runs: per-task rows match each run's own paired
statistics, and the pooled row pairs every problem of every run."""

from __future__ import annotations

import gzip
import json

import pytest

from scripts.summarize_evals import answered_by_any, auroc
from scripts.summarize_evals import main as summarize
from selector.agents import Agent
from selector.cli import main as tokenrelay
from selector.scorer import ScorerConfig, TokenSelector

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def two_runs(tiny_lm_dir, tiny_plain_lm_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("evals")
    small = Agent.from_pretrained(tiny_lm_dir, device="cpu")
    config = ScorerConfig(
        hidden_layer=-1, hidden_size=32, small_model=str(tiny_lm_dir), d_model=32,
        granularity="word", small_vocab_size=len(small.tokenizer),
    )  # fmt: skip
    selector = TokenSelector(config).save_pretrained(root / "tiny-selector")
    runs = {}
    for task, offset in (("adding", 0), ("more", 10)):
        data = root / f"{task}.jsonl"
        rows = [{"id": f"{task}-0-{i}", "question": f"What is {i} + {i + 1}?", "answer": str(2 * i + 1)}
                for i in range(offset, offset + 4)]  # fmt: skip
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        out = root / f"eval_{task}"
        args = ["eval", "--data", str(data), "--relay.small", str(tiny_lm_dir), "--relay.large", str(tiny_plain_lm_dir),
                "--out", str(out), "--selectors", json.dumps(["none", "full", "selfinfo", "last", str(selector)]),
                "--budgets", "[0.5]", "--gates", "[always]", "--conditions", "[large_direct, small_reasoning, relay]",
                "--relay.reason-tokens", "10", "--relay.answer-tokens", "3", "--relay.batch-size", "2", "--relay.granularity", "word",
                "--relay.device", "cpu", "--plot", "false"]  # fmt: skip
        assert tokenrelay(args) == 0
        runs[task] = out
    return runs


def test_per_task_rows_match_each_run_and_pooled_pairs_all_problems(two_runs, tmp_path, capsys):
    out = tmp_path / "summary"
    assert summarize([f"{k}={v}" for k, v in two_runs.items()] + ["--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = {(r["task"], r["condition"]): r for r in summary["rows"]}
    cond = "relay:tiny-selector@0.5:always"
    assert set(rows) == {("adding", cond), ("more", cond), ("pooled", cond)}
    for task, path in two_runs.items():
        result = json.loads((path / "results.json").read_text())
        own = next(
            p for p in result["paired"] if p["condition"] == cond and p["reference"] == "best heuristic"
        )
        assert rows[(task, cond)]["vs_best_logprob"] == own["gold_logprob"]
        assert rows[(task, cond)]["n"] == 4
        row = next(r for r in result["rows"] if r["condition"] == cond)
        assert rows[(task, cond)]["accuracy"] == pytest.approx(row["accuracy"])
        recs = [json.loads(x) for x in (path / "records.jsonl").read_text().splitlines() if x.strip()]
        right = {r["id"] for r in recs if r["correct"]}
        assert rows[(task, cond)]["answered_by_any"] == len(right)
    pooled = rows[("pooled", cond)]
    assert pooled["n"] == 8 and pooled["vs_best_logprob"]["n"] == 8
    assert pooled["answered_by_any"] == sum(rows[(t, cond)]["answered_by_any"] for t in two_runs)
    w, l_, t = (pooled["vs_best_logprob"][k] for k in ("wins", "losses", "ties"))
    assert w + l_ + t == 8
    assert "| pooled |" in (out / "summary.md").read_text() and "| pooled |" in capsys.readouterr().out

    # every heuristic on its own, no hindsight choice: the same per-problem differences as the records
    each = {(r["task"], r["heuristic"]): r for r in summary["each_heuristic"] if r["condition"] == cond}
    assert set(each) == {(t, h) for t in ("adding", "more", "pooled") for h in ("selfinfo", "last")}
    recs = [
        json.loads(x) for x in (two_runs["adding"] / "records.jsonl").read_text().splitlines() if x.strip()
    ]
    lp = {
        c: [r["gold_logprob"] for r in recs if r["condition"] == c] for c in (cond, "relay:last@0.5:always")
    }
    diffs = sorted(a - b for a, b in zip(lp[cond], lp["relay:last@0.5:always"]))
    assert each[("adding", "last")]["mean_diff"] == pytest.approx(sum(diffs) / 4)
    assert each[("adding", "last")]["median_diff"] == pytest.approx((diffs[1] + diffs[2]) / 2)
    assert each[("pooled", "last")]["n"] == 8
    assert "against each heuristic" in (out / "summary.md").read_text()

    # the same run twice pools the same problems twice: refused
    with pytest.raises(SystemExit, match="repeat"):
        summarize([f"a={two_runs['adding']}", f"b={two_runs['adding']}", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="not a finished"):
        summarize([f"a={tmp_path}", "--out", str(tmp_path / "y")])


def test_auroc_on_known_orders():
    assert auroc([0.9, 0.8, 0.2, 0.1], [True, True, False, False]) == 1.0
    assert auroc([0.1, 0.2, 0.8, 0.9], [True, True, False, False]) == 0.0
    assert auroc([0.5, 0.5, 0.9, 0.1], [True, False, True, False]) == pytest.approx(0.875)  # one tie: half
    assert auroc([0.3, 0.4], [True, True]) is None


def test_answered_by_any_counts_problems_not_records():
    records = {
        "large_direct": [
            {"id": "a", "correct": True},
            {"id": "b", "correct": False},
            {"id": "c", "correct": False},
        ],
        "relay:x": [{"id": "a", "correct": True}, {"id": "b", "correct": True}, {"id": "c", "correct": None}],
        "small_reasoning": [{"id": "a", "correct": False}, {"id": "b", "correct": False}, {"id": "c"}],
    }
    assert answered_by_any(records) == 2  # a twice and b once: two problems; c never
    assert answered_by_any({k: [dict(r, correct=False) for r in v] for k, v in records.items()}) == 0


def _of(recs: list[dict], condition: str) -> list[dict]:
    return [r for r in recs if r["condition"] == condition]


def test_relays_split_by_the_small_models_correctness(two_runs, tmp_path):
    out = tmp_path / "summary"
    assert summarize([f"{k}={v}" for k, v in two_runs.items()] + ["--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for task, path in two_runs.items():
        recs = [json.loads(x) for x in (path / "records.jsonl").read_text().splitlines() if x.strip()]
        right = [bool(r["correct"]) for r in recs if r["condition"] == "small_reasoning"]
        split = {r["condition"]: r for r in summary["by_small_model"] if r["task"] == task}
        assert set(split) == {r["condition"] for r in recs if r["condition"].startswith("relay:")}
        for cond, row in split.items():
            lps = [r["gold_logprob"] for r in recs if r["condition"] == cond]
            assert (row["n_right"], row["n_wrong"]) == (sum(right), len(right) - sum(right))
            mine = [lp for lp, ok in zip(lps, right) if ok]
            assert row["logprob_right"] == (pytest.approx(sum(mine) / len(mine)) if mine else None)
            empty = [r["transfer_tokens"] == 0 for r, ok in zip(_of(recs, cond), right) if not ok]
            assert row["sent_nothing_wrong"] == (pytest.approx(sum(empty) / len(empty)) if empty else None)
        conf = next(c for c in summary["small_confidence"] if c["task"] == task)
        probs = [r["small_prob"] or 0.0 for r in recs if r["condition"] == "relay:none:always"]
        assert conf["auroc"] == auroc(probs, right)
    assert "small model's own answer was right / wrong" in (out / "summary.md").read_text()


def test_qualifying_tasks_and_what_each_condition_sent(two_runs, tmp_path):
    """A task qualifies when the full reasoning helps on >= a quarter of its problems; the qualifying tasks get a
    pooled row of their own, and every row says on what share of problems its condition sent any unit."""
    runs = {}
    for task, helps in (("adding", 1), ("more", 0)):  # 1 of 4 problems: exactly a quarter, qualifies
        runs[task] = tmp_path / task
        runs[task].mkdir()
        (runs[task] / "records.jsonl").write_text((two_runs[task] / "records.jsonl").read_text())
        result = json.loads((two_runs[task] / "results.json").read_text())
        (runs[task] / "results.json").write_text(json.dumps(dict(result, full_helps=helps)))
    out = tmp_path / "summary"
    assert summarize([f"{k}={v}" for k, v in runs.items()] + ["--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["qualifying_tasks"] == ["adding"]
    cond = "relay:tiny-selector@0.5:always"
    rows = {r["task"]: r for r in summary["rows"] if r["condition"] == cond}
    assert (rows["adding"]["qualifies"], rows["more"]["qualifies"], rows["pooled"]["qualifies"]) == (
        True,
        False,
        None,
    )
    qualifying = rows["pooled (qualifying)"]
    assert qualifying["n"] == 4 and qualifying["full_helps"] == 1
    assert qualifying["vs_best_logprob"]["mean_diff"] == pytest.approx(
        rows["adding"]["vs_best_logprob"]["mean_diff"]
    )
    for task in runs:
        recs = _of([json.loads(x) for x in (runs[task] / "records.jsonl").read_text().splitlines()], cond)
        assert rows[task]["sent_any"] == pytest.approx(
            sum(r["transfer_tokens"] > 0 for r in recs) / len(recs)
        )
    assert "| adding | relay:tiny-selector@0.5:always | 4 | 1 | yes |" in (out / "summary.md").read_text()

    # gzipped records (as docs/results keeps them) read the same
    text = (runs["more"] / "records.jsonl").read_text()
    (runs["more"] / "records.jsonl").unlink()
    with gzip.open(runs["more"] / "records.jsonl.gz", "wt") as fh:
        fh.write(text)
    again = tmp_path / "again"
    assert summarize([f"{k}={v}" for k, v in runs.items()] + ["--out", str(again)]) == 0
    assert json.loads((again / "summary.json").read_text())["rows"] == summary["rows"]

    # every task qualifying: no second pooled row (it would repeat the first)
    (runs["more"] / "results.json").write_text(json.dumps(dict(result, full_helps=4)))
    assert summarize([f"{k}={v}" for k, v in runs.items()] + ["--out", str(out)]) == 0
    assert "pooled (qualifying)" not in {
        r["task"] for r in json.loads((out / "summary.json").read_text())["rows"]
    }
    with pytest.raises(SystemExit, match="reserved"):
        summarize([f"pooled (qualifying)={runs['more']}", "--out", str(tmp_path / "z")])
