"""CPU smoke test of scripts/bench_latency on tiny models: every row, the threads, the outputs, a resume."""

from __future__ import annotations

import itertools
import json

import pytest

from scripts.bench_latency import BenchLatencyConfig, main
from scripts.latency_report import markdown
from selector.relay import RelayConfig


def test_bench_latency_smoke(tiny_lm_dir, tiny_plain_lm_dir, arithmetic_jsonl, tmp_path, one_thread, capsys):
    out = tmp_path / "bench"
    args = ["--relay.small", str(tiny_lm_dir), "--relay.large", str(tiny_plain_lm_dir), "--data", str(arithmetic_jsonl),
            "--dev_data", str(arithmetic_jsonl), "--out", str(out), "--limit", "3", "--relay.reason_tokens", "12",
            "--relay.answer_tokens", "4", "--large_reason_tokens", "8", "--gates", "[agreement, confidence]",
            "--levers", "[sequential, concurrent+stop=agreement+calibrated, stop=selector]"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "latency.json").read_text())
    assert (out / "latency.png").stat().st_size > 0 and (out / "latency.md").exists()
    titles = [r["title"] for r in result["rows"]]
    assert titles[:3] == ["large direct", "large reasoning", "small reasoning"]
    assert any("(agreement)" in t for t in titles) and any("(confidence)" in t for t in titles)
    levers = {r["levers"]: r for r in result["rows"] if r["kind"] == "lever"}
    assert set(levers) == {"sequential", "concurrent+stop=agreement+calibrated", "stop=selector"}
    assert levers["concurrent+stop=agreement+calibrated"]["threads"] == {"large": 1, "small": 1}
    assert "vs_sequential" in levers["stop=selector"] and "vs_sequential" not in levers["sequential"]
    for lever in ("sequential", "stop=selector"):  # the wall time around each call holds every counted stage
        assert levers[lever]["wall_s"] >= levers[lever]["end_to_end"] > 0
    assert "Wall time per question" in (out / "latency.md").read_text()
    assert result["calibration"] is not None and 0 <= result["tau"] <= 1
    lo, hi = result["calibration_interval"]  # the dev accuracy's 95% interval, around the dev accuracy
    assert 0 <= lo <= result["calibration"]["accuracy"] <= hi <= 1 and hi - lo > 0.2  # 3 dev questions: wide
    assert "95% interval" in (out / "latency.md").read_text()
    assert (out / "calibrated_relay.yaml").read_text().startswith("# tokenrelay infer")
    assert sum(r["pareto"] for r in result["rows"]) >= 1
    assert result["gate_frontier"] is None  # no always-transfer row among these gates
    for r in result["rows"]:
        assert r["n"] == 3 and r["end_to_end"] > 0 and r["ratio_to_large_reasoning"] is not None
        assert r["title"] in printed
    # A rerun resumes: the live results are read back, not recomputed.
    lines = {p.name: p.read_text() for p in (out / "live").iterdir()}
    assert main(args) == 0
    assert {p.name: p.read_text() for p in (out / "live").iterdir()} == lines
    again = json.loads((out / "latency.json").read_text())
    assert [r["accuracy"] for r in again["rows"]] == [r["accuracy"] for r in result["rows"]]
    # A larger --limit extends the same live files (per-question results), keeping what they hold.
    assert main([*args, "--limit", "4"]) == 0
    for name, text in lines.items():
        grown = (out / "live" / name).read_text()
        assert grown.startswith(text) and len(grown.splitlines()) == 4


def test_bench_latency_own_dtype_and_large_reasoning_target(
    tiny_lm_dir, tiny_plain_lm_dir, arithmetic_jsonl, tmp_path, one_thread
):
    """The baseline at its own dtype (a second copy of the large model) and the calibration target read
    from the large model's own accuracy on the dev questions."""
    out = tmp_path / "bench"
    args = ["--relay.small", str(tiny_lm_dir), "--relay.large", str(tiny_plain_lm_dir), "--data", str(arithmetic_jsonl),
            "--dev_data", str(arithmetic_jsonl), "--out", str(out), "--limit", "2", "--dev_limit", "3",
            "--relay.reason_tokens", "8", "--relay.answer_tokens", "4", "--large_reason_tokens", "6",
            "--gates", "[always]", "--levers", "[calibrated]", "--large_reason_dtype", "bfloat16",
            "--calibrate_to", "large_reasoning"]  # fmt: skip
    assert main(args) == 0
    result = json.loads((out / "latency.json").read_text())
    titles = [r["title"] for r in result["rows"]]
    assert titles[:3] == ["large direct", "large reasoning (bfloat16)", "small reasoning"]
    assert "large reasoning" not in titles  # the relay-dtype baseline is not run beside it
    eval_conditions = {
        json.loads(x)["condition"] for x in (out / "eval" / "records.jsonl").read_text().splitlines()
    }
    assert "large_reasoning" not in eval_conditions
    own = [json.loads(x) for x in (out / "own_eval" / "records.jsonl").read_text().splitlines()]
    assert len(own) == 2 and {r["condition"] for r in own} == {"large_reasoning"}
    dev_own = json.loads((out / "dev_own_eval" / "results.json").read_text())
    dev_accuracy = next(r["accuracy"] for r in dev_own["rows"] if r["kind"] == "large_reasoning")
    assert result["calibration_target_accuracy"] == pytest.approx(dev_accuracy)
    own_row = result["rows"][1]
    assert own_row["ratio_to_large_reasoning"] == pytest.approx(1.0)
    dtypes = "Dtypes: the large model float32 (its own reasoning bfloat16), the small model float32."
    assert dtypes in (out / "latency.md").read_text()
    assert own_row["accuracy"] == pytest.approx(sum(r["correct"] for r in own) / 2)
    # the gate at every tau on the test questions, from the always-transfer row: its Pareto points
    front = result["gate_frontier"]
    assert front and front[0]["tau"] == 0.0 and front[0]["transfer_rate"] == 0.0
    direct = [json.loads(x) for x in (out / "eval" / "records.jsonl").read_text().splitlines()]
    direct = [r for r in direct if r["condition"] == "large_direct"]
    assert front[0]["latency"] == pytest.approx(sum(r["latency_s"] for r in direct) / len(direct))
    for a, b in itertools.pairwise(front):
        assert b["latency"] > a["latency"] and b["accuracy"] > a["accuracy"]
    for f in front:
        assert f["ratio_to_large_reasoning"] == pytest.approx(f["latency"] / own_row["end_to_end"])
    assert "The confidence gate at every tau" in (out / "latency.md").read_text()


def test_an_unreachable_calibration_target_is_reported_not_raised(
    tiny_lm_dir, tiny_plain_lm_dir, arithmetic_jsonl, tmp_path, one_thread
):
    """A relay that never reaches the target on dev (tiny models, 100%) is a finding: the benchmark says so,
    skips the calibrated levers and still measures everything else."""
    out = tmp_path / "bench"
    args = ["--relay.small", str(tiny_lm_dir), "--relay.large", str(tiny_plain_lm_dir), "--data", str(arithmetic_jsonl),
            "--dev_data", str(arithmetic_jsonl), "--out", str(out), "--limit", "2", "--dev_limit", "2",
            "--relay.reason_tokens", "8", "--relay.answer_tokens", "4", "--large_reason_tokens", "6",
            "--gates", "[always]", "--levers", "[sequential, calibrated]", "--target_accuracy", "1.0"]  # fmt: skip
    out.mkdir()
    # an earlier run's choice in the same folder: not this run's
    (out / "calibrated_relay.yaml").write_text("relay: {tau: 0.1}\n")
    assert main(args) == 0
    result = json.loads((out / "latency.json").read_text())
    assert (
        result["calibration"] is None
        and "no setting reaches accuracy 1.000" in result["calibration_unreachable"]
    )
    levers = [r["levers"] for r in result["rows"] if r["kind"] == "lever"]
    assert levers == ["sequential"]
    assert result["tau"] == pytest.approx(0.5)  # relay.tau, untouched
    report = (out / "latency.md").read_text()
    assert "uncalibrated: no setting reaches" in report
    own = next(r for r in result["rows"] if r["kind"] == "large_reasoning")
    # the acceptance line: the fastest configuration at the large model's own accuracy, or that there is none
    if result["best"] is None:
        assert f"No configuration reaches the large model's own accuracy ({own['accuracy']:.1%})" in report
    else:
        assert "Fastest at >= the large model's own accuracy" in report
    assert not (out / "calibrated_relay.yaml").exists()


def test_the_report_says_when_only_the_large_models_own_reasoning_is_accurate_enough():
    def row(title, kind, accuracy, seconds):
        return {"title": title, "kind": kind, "accuracy": accuracy, "gold_logprob": None, "transfer_rate": None,
                "end_to_end": seconds, "ratio_to_large_reasoning": seconds / 30.0,
                "threads": {"large": 2, "small": 2}, "pareto": True}  # fmt: skip

    rows = [
        row("large reasoning", "large_reasoning", 0.625, 30.0),
        row("relay (confidence)", "relay", 0.03, 8.0),
    ]
    text = markdown({"rows": rows, "best": None})
    assert "No configuration reaches the large model's own accuracy (62.5%)" in text
    text = markdown({"rows": rows[1:], "best": None})  # no baseline measured: no verdict either way
    assert "No configuration" not in text and "Fastest" not in text


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"levers": ["warp"]}, "bad lever 'warp'"),
        ({"levers": ["stop=confidence+stop=agreement"]}, "more than one early-stop signal"),
        ({"levers": ["concurrent", "concurrent"]}, "more than once"),
        ({"levers": ["stop=magic"]}, "bad lever"),
        ({"stop_threshold": -1.0}, "stop_threshold"),
        ({"check_every": 0}, "check_every"),
        ({"large_threads": -1}, "large_threads"),
        ({"gates": ["sometimes"]}, "unknown gate"),
        ({"target_accuracy": 2.0}, "target_accuracy"),
        ({"concurrent": True}, "set per lever"),
        ({"calibrate_to": "small_reasoning"}, "calibrate_to"),
        ({"large_reason_dtype": "float8"}, "large_reason_dtype"),
        ({"calibration_margin": -0.1}, "calibration_margin"),
        ({"calibration_margin": 1.0}, "calibration_margin"),
        ({"levers": ["sequential", "calibrated+stop=head"]}, "need stop_head"),
        ({"stop_head": "some/folder"}, "only read by stop=head levers"),
    ],
)
def test_bad_settings_fail_before_any_model_loads(kw, message):
    with pytest.raises(ValueError, match=message):
        nested = {
            k: v
            for k, v in kw.items()
            if k in ("stop_threshold", "check_every", "large_threads", "concurrent")
        }
        relay = RelayConfig(small="/no/small", large="/no/large", batch_size=1, **nested)
        BenchLatencyConfig(data="d.jsonl", relay=relay, **{k: v for k, v in kw.items() if k not in nested})


def test_every_relay_gate_is_a_benchmark_gate():
    relay = RelayConfig(small="/no/small", large="/no/large", batch_size=1)
    gates = ["always", "agreement", "confidence", "small_confidence"]
    assert BenchLatencyConfig(data="d.jsonl", relay=relay, gates=gates).gates == gates


def test_paired_with_own_on_constructed_questions():
    """The best configuration against the large model's own reasoning: known ratio and accuracy gap."""
    from scripts.latency_report import paired_with_own

    own = [(True, 4.0), (False, 8.0), (False, 4.0), (True, 8.0)]
    row = [(True, 1.0), (True, 2.0), (False, 1.0), (True, 2.0)]  # a quarter of the time, one more right
    stats = paired_with_own(row, own)
    assert stats["ratio_ci"] == pytest.approx([0.25, 0.25])
    acc = stats["accuracy_vs_own"]
    assert acc["mean_diff"] == pytest.approx(0.25) and (acc["wins"], acc["losses"], acc["ties"]) == (1, 0, 3)
    assert acc["ci_low"] <= 0.25 <= acc["ci_high"]
    uneven = paired_with_own([(True, 1.0), (True, 3.0)], [(True, 2.0), (True, 2.0)])
    assert uneven["ratio_ci"][0] < 1.0 < uneven["ratio_ci"][1]  # resampling moves the ratio
    assert paired_with_own([], own) == {} and paired_with_own(row[:2], own) == {}


def test_the_stop_head_lever(tiny_lm_dir, tiny_plain_lm_dir, arithmetic_jsonl, tmp_path, one_thread):
    """A planted head that always says done stops each live reasoning at its first sentence boundary."""
    import torch

    from selector.agents import Agent
    from selector.stop_head import StopHead

    head = StopHead(Agent.from_pretrained(tiny_lm_dir, device="cpu").model.config.hidden_size)
    with torch.no_grad():
        head.linear.weight.zero_()
        head.linear.bias.fill_(8.0)
    head.save_pretrained(tmp_path / "head")
    out = tmp_path / "bench"
    args = ["--relay.small", str(tiny_lm_dir), "--relay.large", str(tiny_plain_lm_dir), "--data", str(arithmetic_jsonl),
            "--out", str(out), "--limit", "2", "--relay.reason_tokens", "24", "--relay.answer_tokens", "4",
            "--large_reason_tokens", "6", "--gates", "[always]", "--levers", "[sequential, stop=head]",
            "--stop_head", str(tmp_path / "head")]  # fmt: skip
    assert main(args) == 0
    rows = {
        r["levers"]: r for r in json.loads((out / "latency.json").read_text())["rows"] if r["kind"] == "lever"
    }
    assert set(rows) == {"sequential", "stop=head"} and "vs_sequential" in rows["stop=head"]
    live = {
        p.name.split("-")[0]: [json.loads(x) for x in p.read_text().splitlines()]
        for p in (out / "live").iterdir()
    }
    full = {r["id"]: r["reasoning"] for r in live["sequential"]}
    for r in live["stop=head"]:  # stopped at the first boundary when there was one, else the same reasoning
        assert r["stop_checks"] <= 1 and (r["small_finish"] == "early_stop") == (r["stop_checks"] == 1)
        assert full[r["id"]].startswith(r["reasoning"])
