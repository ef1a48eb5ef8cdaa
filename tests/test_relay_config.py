"""One ``RelayConfig``, nested as ``relay`` wherever a relay is configured: command line, YAML, checks.

No model is loaded: the relay is built on stand-ins where a test needs one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from selector.cli import main, parse_config
from selector.commands.infer import InferConfig
from selector.evaluation import EvalConfig
from selector.evaluation.calibrate import CalibrateConfig, calibrate
from selector.relay import Relay, RelayConfig, resolve_granularity
from selector.selection import DEFAULT_BUDGETS, Budget

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
PROG = "tokenrelay infer"


def _trained(units: str) -> SimpleNamespace:
    """A stand-in for a trained selector: what the relay reads of one (its config's units)."""
    return SimpleNamespace(
        name=f"selector:{units}", config=SimpleNamespace(granularity=units, backbone="encoder")
    )


def test_nested_option_on_the_command_line_reaches_the_relay():
    argv = [
        "--config",
        str(CONFIGS / "infer.yaml"),
        "--relay.budget",
        "0.5",
        "--data",
        "null",
        "--question",
        "2 + 3?",
    ]
    config = parse_config(InferConfig, argv, PROG)
    assert config.relay.budget == 0.5 and config.relay.gate == "agreement"  # the rest from the YAML
    relay = Relay(None, object(), "selfinfo", replace(config.relay, gate="never"))
    assert relay.budget == Budget("ratio", 0.5)


def test_relay_block_in_yaml(tmp_path):
    path = tmp_path / "infer.yaml"
    block = {"large": "L", "small": "S", "gate": "always", "budget_kind": "topk", "granularity": "word"}
    path.write_text(yaml.safe_dump({"relay": block, "question": "2 + 3?"}))
    relay = parse_config(InferConfig, ["--config", str(path)], PROG).relay
    assert (relay.large, relay.small, relay.gate, relay.granularity) == ("L", "S", "always", "word")
    assert relay.budget is None and relay.budget_spec == Budget("topk", 3)


@pytest.mark.parametrize(
    ("argv", "yaml_text", "message"),
    [
        (["--budget_kind", "topk"], None, "--budget_kind is a relay option now: use --relay.budget_kind"),
        (["--budget-kind", "topk"], None, "use --relay.budget_kind"),
        (["--gate=always"], None, "use --relay.gate"),
        ([], "gate: always\nlarge: L\n", "`gate:` is a relay option now: move it into a `relay:` block"),
    ],
)
def test_an_old_flat_option_is_one_clear_line(tmp_path, capsys, argv, yaml_text, message):
    if yaml_text is not None:
        (tmp_path / "old.yaml").write_text(yaml_text)
        argv = ["--config", str(tmp_path / "old.yaml")]
    assert main(["infer", *argv, "--question", "2 + 3?"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "usage:" not in err
    assert len(err.strip().splitlines()) == 1


def test_help_lists_the_nested_options_with_their_docstrings(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["infer", "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--relay.budget" in out and "the kind's default" in out and "--relay.granularity" in out


def test_resolve_granularity():
    assert resolve_granularity("auto", "selfinfo") == "sentence"
    assert resolve_granularity("word", "selfinfo") == "word"
    assert resolve_granularity("auto", _trained("word")) == "word"
    assert resolve_granularity("word", _trained("word")) == "word"
    with pytest.raises(
        ValueError, match="granularity 'sentence' does not match the trained selector's 'word'"
    ):
        resolve_granularity("sentence", _trained("word"))


def test_the_relay_never_overrides_its_granularity_silently(caplog):
    never = RelayConfig(gate="never")
    with caplog.at_level(logging.INFO, logger="selector.relay"):
        assert Relay(None, object(), _trained("token"), never).granularity == "token"
        assert Relay(None, object(), _trained("token"), never).granularity == "token"
    assert sum("granularity auto" in r.getMessage() for r in caplog.records) == 1  # said once
    with pytest.raises(ValueError, match="does not match"):
        Relay(None, object(), _trained("token"), replace(never, granularity="sentence"))
    assert Relay(None, object(), "first", never).granularity == "sentence"


def test_budget_none_is_the_kinds_default():
    for kind, value in DEFAULT_BUDGETS.items():
        config = RelayConfig(budget_kind=kind)
        assert config.budget is None and config.budget_value == value
        assert config.budget_spec.value == value
    with pytest.raises(ValueError, match="k >= 0"):
        RelayConfig(budget_kind="topk", budget=-1)
    # eval with another budget kind needs no explicit relay budget: the grid's budgets are checked
    relay = RelayConfig(small="S", large="L", budget_kind="topk")
    config = EvalConfig(data="d.jsonl", relay=relay, budgets=[1, 2], selectors=["first"])
    assert config.relay_config("first", "always", 2).budget_spec == Budget("topk", 2)
    assert config.relay_config("full", "always", None).budget_spec == Budget("ratio", 1.0)
    with pytest.raises(ValueError, match="whole number"):
        EvalConfig(data="d.jsonl", relay=relay, budgets=[0.5], selectors=["first"])


@pytest.mark.parametrize(
    ("relay", "message"),
    [
        ({"concurrent": True}, "eval does not take relay.concurrent = True"),
        ({"early_stop": "confidence"}, "eval does not take relay.early_stop = 'confidence'"),
        ({"keep_answer_line": True}, "eval does not take relay.keep_answer_line = True"),
        ({"budget": 0.5}, "eval does not take relay.budget = 0.5"),
    ],
)
def test_eval_refuses_relay_settings_its_grid_cannot_honour(relay, message):
    with pytest.raises(ValueError, match=message) as err:
        EvalConfig(data="d.jsonl", relay=RelayConfig(small="S", large="L", **relay))
    assert "\n" not in str(err.value)


def test_eval_cells_are_the_relay_with_the_grid_settings():
    relay = RelayConfig(small="S", large="L", tau=0.7, reason_tokens=9, granularity="word", force_last=True)
    cell = EvalConfig(data="d.jsonl", relay=relay).relay_config("random", "confidence", 0.5)
    assert cell == replace(relay, selector="random", budget=0.5, gate="confidence", score_gold=True)


def _dev_eval(folder: Path, trained: Path) -> Path:
    """A dev eval run in the nested format: large_direct and one trained-selector relay at gate always."""
    folder.mkdir()
    rows = []
    for i, p in enumerate([0.2, 0.4, 0.6, 0.8]):
        rows.append({"condition": "large_direct", "id": f"q{i}", "direct_prob": p, "correct": p > 0.5,
                     "latency_s": 1.0, "stages": {}})  # fmt: skip
        rows.append({"condition": "relay:sel@0.25:always", "id": f"q{i}", "correct": True, "latency_s": 3.0,
                     "stages": {}})  # fmt: skip
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    relay = {**vars(RelayConfig(small="models/s", large="models/l", granularity="auto", reason_tokens=99))}
    result = {"small": "models/s", "large": "models/l", "budget_kind": "ratio",
              "config": {"selectors": [str(trained)], "relay": relay},
              "rows": [{"condition": "relay:sel@0.25:always", "selector": "sel", "budget": 0.25}]}  # fmt: skip
    (folder / "results.json").write_text(json.dumps(result))
    return folder


def test_calibrate_output_round_trips_through_infer(tmp_path):
    trained = tmp_path / "sel"
    trained.mkdir()  # a checkpoint folder by name (calibrate does not load it)
    out = tmp_path / "calibrated.yaml"
    calibrate(
        CalibrateConfig(eval=str(_dev_eval(tmp_path / "dev", trained)), target_accuracy=1.0, out=str(out))
    )
    written = yaml.safe_load(out.read_text())
    assert set(written) == {"relay"}
    relay = parse_config(InferConfig, ["--config", str(out), "--question", "2 + 3?"], PROG).relay
    assert (relay.small, relay.large, relay.selector) == ("models/s", "models/l", str(trained))
    assert (relay.gate, relay.budget, relay.granularity, relay.reason_tokens) == (
        "confidence",
        0.25,
        "auto",
        99,
    )
    assert relay.tau == pytest.approx(0.5)  # transfer the two unsure questions: all four right


def test_calibrate_reads_an_old_flat_run_and_lets_a_trained_selector_keep_its_units(tmp_path):
    trained = tmp_path / "sel"
    trained.mkdir()
    dev = _dev_eval(tmp_path / "dev", trained)
    result = json.loads((dev / "results.json").read_text())
    result["config"] = {"selectors": [str(trained)], "granularity": "sentence", "reason_tokens": 77}  # flat
    (dev / "results.json").write_text(json.dumps(result))
    out = tmp_path / "c.yaml"
    calibrate(CalibrateConfig(eval=str(dev), target_accuracy=1.0, out=str(out)))
    relay = parse_config(InferConfig, ["--config", str(out), "--question", "q"], PROG).relay
    assert relay.reason_tokens == 77 and relay.granularity == "auto"  # the old runs' units were for baselines


def test_small_dtype_loads_the_small_model_in_its_own_dtype(tiny_lm_dir):
    import torch

    with pytest.raises(ValueError, match="small_dtype must be one of"):
        RelayConfig(small_dtype="float8")
    with pytest.raises(ValueError, match="dtype must be one of"):
        RelayConfig(dtype="half")
    config = RelayConfig(
        small=str(tiny_lm_dir),
        large=str(tiny_lm_dir),
        selector="last",
        dtype="bfloat16",
        small_dtype="float32",
    )
    assert (
        config.load_kwargs("small")["dtype"] == "float32"
        and config.load_kwargs("large")["dtype"] == "bfloat16"
    )
    assert RelayConfig(dtype="bfloat16").load_kwargs("small")["dtype"] == "bfloat16"  # None: the same
    relay = Relay.from_config(config)
    assert relay.small.model.dtype == torch.float32 and relay.large.model.dtype == torch.bfloat16
    assert relay.answer("What is 2 + 3?").answer is not None
