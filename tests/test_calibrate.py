"""`tokenrelay calibrate` on constructed eval records: the tau it picks meets the target, and infer reads it."""

from __future__ import annotations

import json

import pytest

from selector.cli import main, parse_config
from selector.commands.infer import InferConfig
from selector.evaluation.calibrate import (
    CalibrateConfig,
    calibrate,
    candidate_taus,
    evaluate_gate,
    tau_frontier,
    wilson_interval,
)

# Ten dev questions: the large model's direct answer is right exactly when it is confident
# (p >= 0.6: q6..q9); the transfer is right on all but q0. Direct takes 1 s, a transfer 4 s more
# (small 3 s, selection 0, final answer 1 s).
PROBS = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def _records():
    rows = []
    for i, p in enumerate(PROBS):
        rows.append({"condition": "large_direct", "id": f"q{i}", "direct_prob": p, "correct": p >= 0.6,
                     "latency_s": 1.0, "stages": {"large_direct": {"seconds": 1.0}}})  # fmt: skip
        stages = {"small_reasoning": {"seconds": 3.0}, "selection": {"seconds": 0.0},
                  "large_prefill": {"seconds": 0.5}, "large_decode": {"seconds": 0.5}}  # fmt: skip
        rows.append({"condition": "relay:selfinfo@0.25:always", "id": f"q{i}", "direct_prob": None,
                     "correct": i != 0, "latency_s": 4.0, "stages": stages})  # fmt: skip
    return rows


@pytest.fixture()
def dev_eval(tmp_path):
    folder = tmp_path / "dev_eval"
    folder.mkdir()
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _records()))
    result = {
        "small": "models/small", "large": "models/large", "budget_kind": "ratio",
        "config": {"selectors": ["selfinfo"], "granularity": "sentence", "reason_tokens": 200, "device": "cpu"},
        "rows": [{"condition": "relay:selfinfo@0.25:always", "selector": "selfinfo", "budget": 0.25}],
    }  # fmt: skip
    (folder / "results.json").write_text(json.dumps(result))
    return folder


def test_candidate_taus_are_midpoints():
    assert candidate_taus([0.2, 0.4, 0.4, 0.8]) == pytest.approx([0.0, 0.3, 0.6, 1.0])


def test_gate_outcome_by_hand(dev_eval):
    from selector.evaluation.calibrate import _records

    recs = _records(dev_eval)
    direct, transfer = recs["large_direct"], recs["relay:selfinfo@0.25:always"]
    # tau 0.55: q0..q5 transfer (q0 wrong), q6..q9 direct (right): 9/10, 6 x 5 s + 4 x 1 s.
    assert evaluate_gate(direct, transfer, 0.55) == pytest.approx((0.9, 3.4, 0.6))
    # concurrent estimate: max(1, 3) + 1 = 4 s for a transfer
    assert evaluate_gate(direct, transfer, 0.55, concurrent=True) == pytest.approx((0.9, 2.8, 0.6))
    assert evaluate_gate(direct, transfer, 0.0) == pytest.approx((0.4, 1.0, 0.0))


@pytest.mark.parametrize(
    ("target", "tau", "accuracy"),
    [
        ({"target_accuracy": 0.9}, 0.55, 0.9),  # the fastest tau at 90%: transfer exactly the unsure six
        ({"target_accuracy": 0.5}, 0.15, 0.5),  # 50%: transfer q0 (wrong anyway) and q1
        ({"target_latency": 2.25}, 0.25, 0.6),  # 1 + 0.4 k s <= 2.25: three transfers (q0..q2)
        ({"target_latency": 100.0}, 0.55, 0.9),  # no latency pressure: the most accurate, then fastest
    ],
)
def test_calibration_picks_the_tau_meeting_the_target(dev_eval, tmp_path, target, tau, accuracy):
    out = tmp_path / "relay.yaml"
    summary = calibrate(CalibrateConfig(eval=str(dev_eval), out=str(out), **target))
    chosen = summary["chosen"]
    assert chosen["tau"] == pytest.approx(tau) and chosen["accuracy"] == pytest.approx(accuracy)
    if "target_latency" in target:
        assert chosen["latency"] <= target["target_latency"]
    # infer reads the written config: the calibrated gate, the eval run's models and options.
    config = parse_config(
        InferConfig, ["--config", str(out), "--question", "2 + 3?"], "tokenrelay infer"
    ).relay
    assert (config.gate, config.tau, config.selector, config.budget) == (
        "confidence",
        pytest.approx(tau),
        "selfinfo",
        0.25,
    )
    assert (config.small, config.large, config.reason_tokens) == ("models/small", "models/large", 200)


def test_the_frontier_holds_the_fastest_setting_at_each_accuracy(dev_eval, tmp_path):
    """Each extra transfer of an unsure question buys 10 points for 0.4 s up to tau 0.55; transferring
    the sure ones after that costs time and buys nothing, so no tau above 0.55 is on the front."""
    summary = calibrate(
        CalibrateConfig(eval=str(dev_eval), out=str(tmp_path / "f.yaml"), target_accuracy=0.7)
    )
    front = [v for f in summary["frontier"] for v in (f["tau"], f["accuracy"], f["latency"])]
    expected = [
        (0.0, 0.4, 1.0),
        (0.15, 0.5, 1.8),
        (0.25, 0.6, 2.2),
        (0.35, 0.7, 2.6),
        (0.45, 0.8, 3.0),
        (0.55, 0.9, 3.4),
    ]
    assert front == pytest.approx([v for point in expected for v in point])
    chosen = summary["chosen"]
    assert (chosen["tau"], chosen["accuracy"]) == (pytest.approx(0.35), pytest.approx(0.7))
    # the same front from the records alone (what scripts.bench_latency reports on its test questions)
    from selector.evaluation.calibrate import _records

    recs = _records(dev_eval)
    cond = "relay:selfinfo@0.25:always"
    alone = tau_frontier(recs["large_direct"], recs[cond], cond)
    assert [(c.tau, c.accuracy, c.latency) for c in alone] == [
        (f["tau"], f["accuracy"], f["latency"]) for f in summary["frontier"]
    ]


def test_wilson_interval_by_hand():
    # 15 of 24: centre (0.625 + 1.92/24) / (1 + 3.84/24) = 0.6078, half-width 0.1807 (z = 1.96)
    lo, hi = wilson_interval(15, 24)
    assert (lo, hi) == (pytest.approx(0.4271, abs=1e-3), pytest.approx(0.7884, abs=1e-3))
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(10, 10)[0] == pytest.approx(0.7225, abs=1e-3)  # all right still leaves room
    lo_many, hi_many = wilson_interval(150, 240)
    assert hi_many - lo_many < (hi - lo) / 2.5  # ten times the questions: about a third of the width
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_a_margin_buys_accuracy_with_latency(dev_eval, tmp_path):
    """Target 50% alone transfers two questions; with a 0.4 margin the dev accuracy must reach 90%."""
    plain = calibrate(CalibrateConfig(eval=str(dev_eval), out=str(tmp_path / "a.yaml"), target_accuracy=0.5))
    safe = calibrate(
        CalibrateConfig(
            eval=str(dev_eval), out=str(tmp_path / "b.yaml"), target_accuracy=0.5, accuracy_margin=0.4
        )
    )
    assert plain["chosen"]["tau"] == pytest.approx(0.15) and safe["chosen"]["tau"] == pytest.approx(0.55)
    assert safe["chosen"]["latency"] > plain["chosen"]["latency"]
    lo, hi = safe["accuracy_interval"]
    assert (lo, hi) == pytest.approx(wilson_interval(9, 10))
    header = (tmp_path / "b.yaml").read_text().splitlines()[1:3]
    assert "margin 0.4" in header[0] and f"95% interval {lo:.3f}-{hi:.3f}" in header[1]


def test_calibrate_command_and_its_refusals(dev_eval, tmp_path, capsys):
    out = tmp_path / "c.yaml"
    assert main(["calibrate", "--eval", str(dev_eval), "--target-accuracy", "0.9", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (
        "tau 0.55" in printed
        and "95% interval" in printed
        and out.read_text().startswith("# tokenrelay infer")
    )
    assert "frontier" in printed and "* tau 0.55" in printed and "  tau 0        accuracy 0.400" in printed
    for args, message in [
        (["--target-accuracy", "0.95"], "no setting reaches accuracy 0.950"),
        (["--target-latency", "0.5"], "no setting stays within 0.5 s"),
        ([], "exactly one of"),
        (["--target-accuracy", "0.9", "--target-latency", "3"], "exactly one of"),
        (["--target-accuracy", "1.5"], "target_accuracy must be in [0, 1]"),
        (["--target-latency", "-1"], "target_latency must be > 0"),
        (["--target-accuracy", "0.9", "--conditions", "[relay:x@0.1:always]"], "no relay condition"),
        (["--target-accuracy", "0.5", "--accuracy-margin", "0.5"], "(target + margin 0.5)"),
        (["--target-accuracy", "0.5", "--accuracy-margin", "-0.1"], "accuracy_margin must be in [0, 1)"),
        (["--target-latency", "3", "--accuracy-margin", "0.1"], "applies to --target_accuracy only"),
    ]:
        code = main(["calibrate", "--eval", str(dev_eval), "--out", str(tmp_path / "x.yaml"), *args])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err
    assert main(["calibrate", "--eval", str(tmp_path / "missing"), "--target-accuracy", "0.5"]) == 2
    assert "records.jsonl does not exist" in capsys.readouterr().err


def test_the_calibrated_config_keeps_every_option_that_changes_the_relay(dev_eval, tmp_path):
    """A dev run with the small model at its own dtype (and other answer-changing options) is calibrated
    into a config that runs that same relay: nothing silently falls back to a default."""
    result = json.loads((dev_eval / "results.json").read_text())
    result["config"] = {
        "selectors": ["selfinfo"],
        "relay": {"granularity": "sentence", "reason_tokens": 200, "device": "cpu", "dtype": "bfloat16",
                  "small_dtype": "float16", "keep_answer_line": True, "reuse_prompt": False, "seed": 3},
    }  # fmt: skip
    (dev_eval / "results.json").write_text(json.dumps(result))
    out = tmp_path / "relay.yaml"
    calibrate(CalibrateConfig(eval=str(dev_eval), out=str(out), target_accuracy=0.9))
    relay = parse_config(
        InferConfig, ["--config", str(out), "--question", "2 + 3?"], "tokenrelay infer"
    ).relay
    assert (relay.dtype, relay.small_dtype, relay.keep_answer_line, relay.reuse_prompt, relay.seed) == (
        "bfloat16",
        "float16",
        True,
        False,
        3,
    )
    assert (relay.granularity, relay.reason_tokens, relay.gate) == ("sentence", 200, "confidence")
