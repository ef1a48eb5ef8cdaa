"""`tokenrelay demo`: a preset of the evaluation engine over the shipped checkpoints, which load and
speak the demo world; and the growth that gives the demo's large agent its size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from scripts.train_demo_agents import ModelShape, grow_model
from selector.agents import Agent
from selector.cli import main
from selector.demo import DEMO_SEED, DemoConfig, default_checkpoints, demo_eval_config, short_table
from selector.demo.synthetic import DEMO_WORLD, generate_problems
from selector.evaluation import build_grid, run_eval
from selector.evaluation.report import markdown_table
from selector.prompts import reasoning_prompt, transfer_prompt
from tests.tiny_models import make_causal_lm

SHIPPED = default_checkpoints()
MAX_SHIPPED_BYTES = 24 * 1024 * 1024


def test_shipped_agents_load_and_speak_the_demo_world():
    small = Agent.from_pretrained(SHIPPED / "small", device="cpu")
    large = Agent.from_pretrained(SHIPPED / "large", device="cpu")
    assert small.uses_chat_template and large.uses_chat_template
    assert large.model.num_parameters() > 4 * small.model.num_parameters()
    q = generate_problems(1, seed=123)[0].question
    for agent in (small, large):  # both reason step by step when asked to
        gen = agent.generate([reasoning_prompt(agent, q).text], max_new_tokens=12)[0]
        assert gen.new_tokens == 12 and gen.text.strip()
    answer = large.generate([transfer_prompt(large, q, None).text], max_new_tokens=4)[0]
    assert answer.finish_reason == "stop" and answer.text.strip()


def test_shipped_selector_loads_and_fits_the_small_agent():
    from selector.scorer import TokenSelector

    selector = TokenSelector.from_pretrained(SHIPPED / "selector")
    small = Agent.from_pretrained(SHIPPED / "small", device="cpu")
    selector.check_compatible(small_agent=small)
    assert selector.config.granularity == "sentence"


def test_shipped_checkpoints_are_small_and_documented():
    files = [p for p in SHIPPED.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= MAX_SHIPPED_BYTES
    for name in ("small", "large", "selector"):
        assert (SHIPPED / name / "README.md").is_file(), f"{name} has no model card"
        assert (SHIPPED / name / "model.safetensors").is_file()
    assert (SHIPPED / "README.md").is_file()
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
    gate = json.loads((SHIPPED / "gate.json").read_text())  # the calibrated tau the demo's gate uses
    assert 0 < gate["tau"] < 1 and gate["dev_seed"] != DEMO_SEED and gate["dev_questions"] >= 100


def test_demo_is_the_engine_preset(tmp_path, capsys):
    """The demo's table is the engine's result for the preset config: same rows, same numbers."""
    out = tmp_path / "demo"
    argv = ["demo", "--questions", "3", "--out", str(out), "--budgets", "[0.25]", "--batch-size", "3",
            "--reason-tokens", "40"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "results.json").read_text())
    config = DemoConfig(questions=3, out=str(out), budgets=[0.25], batch_size=3, reason_tokens=40)
    eval_config = demo_eval_config(config, SHIPPED, out / "questions.jsonl")
    assert eval_config.relay.tau == json.loads((SHIPPED / "gate.json").read_text())["tau"]
    assert [r["condition"] for r in result["rows"]] == [c.id for c in build_grid(eval_config)]
    ids = {r["condition"] for r in result["rows"]}
    assert {"large_direct", "large_reasoning", "small_reasoning"} <= ids
    for name in ("selector", "full", "random", "first", "last", "selfinfo"):
        assert any(i.startswith(f"relay:{name}") and i.endswith(":always") for i in ids), name
    assert "relay:selector@0.25:confidence" in ids
    # The questions are the held-out seed's of the demo's world, and the printed table is the engine's
    # table (short rows).
    questions = [json.loads(line) for line in (out / "questions.jsonl").read_text().splitlines()]
    expected = generate_problems(3, DEMO_SEED, DEMO_WORLD)
    assert [(q["id"], q["question"]) for q in questions] == [(p.id, p.question) for p in expected]
    assert short_table(result) in printed and markdown_table(result).split("\n")[0] in printed
    assert "| relay random @ 25% (confidence) |" not in printed  # gated heuristics: results.md only
    assert (out / "accuracy_vs_latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for r in result["rows"]:
        assert r["n"] == 3 and 0 <= r["accuracy"] <= 1 and r["end_to_end"] > 0
    # The engine itself, on the demo's config and folder, gives the very same rows (from its cache),
    # and so does a rerun of the demo.
    again = run_eval(eval_config, progress=False)
    assert again["rows"] == result["rows"]
    assert main(argv) == 0
    assert json.loads((out / "results.json").read_text())["rows"] == result["rows"]


def test_demo_reports_missing_checkpoints_clearly(tmp_path, capsys):
    assert (
        main(["demo", "--questions", "2", "--checkpoints", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    )
    err = capsys.readouterr().err
    assert "small, large, selector are missing" in err and "scripts.build_demo" in err


def test_checkpoints_without_a_calibrated_gate_need_a_tau(tmp_path, capsys):
    """A release folder without gate.json is refused with the way out (rebuild or --tau), and runs with --tau."""
    root = tmp_path / "release"
    root.mkdir()
    for name in ("small", "large", "selector"):
        (root / name).symlink_to(SHIPPED / name)
    argv = ["demo", "--questions", "2", "--checkpoints", str(root), "--out", str(tmp_path / "o"), "--baselines", "[]",
            "--reason-tokens", "20", "--plot", "false"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "gate.json" in err and "--tau" in err and "Traceback" not in err
    assert main([*argv, "--tau", "0.7"]) == 0
    result = json.loads((tmp_path / "o" / "results.json").read_text())
    assert result["config"]["relay"]["tau"] == 0.7


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"questions": 0}, "questions"),
        ({"budgets": []}, "at least one budget"),
        ({"budgets": [0.0]}, "ratios"),
        ({"baselines": ["full"]}, "unknown baseline"),
        ({"baselines": ["best"]}, "unknown baseline"),
        ({"gate": "sometimes"}, "gate"),
        ({"gate": "always"}, "gate"),
        ({"tau": 1.5}, "tau"),
    ],
)
def test_bad_demo_config_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DemoConfig(**kwargs)


def test_shipped_checkpoints_default_is_the_repository_folder():
    assert default_checkpoints() == Path(__file__).resolve().parent.parent / "checkpoints" / "demo"


def test_grown_model_answers_exactly_like_the_original(tmp_path):
    folder = make_causal_lm(tmp_path / "lm", seed=3)
    agent = Agent.from_pretrained(folder, device="cpu")
    c = agent.model.config
    shape = ModelShape(hidden=2 * c.hidden_size, layers=c.num_hidden_layers + 2,
                       heads=2 * c.num_attention_heads, ffn=3 * c.intermediate_size)  # fmt: skip
    grown = grow_model(agent.model, shape, seed=1)
    assert grown.num_parameters() > 3 * agent.model.num_parameters()
    assert grown.config.num_hidden_layers == shape.layers and grown.config.hidden_size == shape.hidden
    ids = torch.randint(3, c.vocab_size, (2, 17))
    with torch.no_grad():
        assert torch.allclose(grown(ids).logits, agent.model(ids).logits, atol=1e-5)
    grown.save_pretrained(tmp_path / "grown")
    agent.tokenizer.save_pretrained(tmp_path / "grown")
    big = Agent.from_pretrained(tmp_path / "grown", device="cpu")
    prompt = [transfer_prompt(agent, "1 + 2?", None).text]
    assert big.generate(prompt, max_new_tokens=6)[0].text == agent.generate(prompt, max_new_tokens=6)[0].text
    with pytest.raises(ValueError, match="growth only"):
        grow_model(agent.model, ModelShape(hidden=c.hidden_size // 2, layers=1, heads=1, ffn=8))


@pytest.mark.parametrize("slip_rate", [0.0, 1.0])
def test_the_large_agents_hints_carry_the_small_agents_slip_at_its_rate(slip_rate):
    """hint_slip_rate: the whole-solution hints recap the overshoot value (never at 0), and the
    target stays the gold answer."""
    from scripts.train_demo_agents import TrainDemoConfig, large_batches

    agent = Agent.from_pretrained(SHIPPED / "small", device="cpu")
    problems = [p for p in generate_problems(300, seed=5, config=DEMO_WORLD) if p.overshoot != p.target]
    config = TrainDemoConfig(batch_size=8, direct_rate=0.0, full_rate=1.0, large_reason_rate=0.0,
                             hint_slip_rate=slip_rate)  # fmt: skip
    ids, mask, weights = large_batches(agent, problems, config)(0)
    by_question = {p.question: p for p in problems}
    for row, row_mask, row_w in zip(ids, mask, weights):
        text = agent.tokenizer.decode(row[row_mask.bool()])
        problem = next(p for q, p in by_question.items() if q in text)
        recap = f"So the answer is {problem.values[problem.overshoot if slip_rate else problem.target]}."
        assert recap in text
        answer = agent.tokenizer.decode(row[(row_w == 1.0) & row_mask.bool()])
        assert answer.strip().startswith(problem.answer)
    with pytest.raises(ValueError, match="hint_slip_rate"):
        TrainDemoConfig(hint_slip_rate=1.5)
