"""The early-stop ``head`` signal: boundaries and states the same in training and in the stream, a planted
head stops where it says, strict save → load, refusals before any work, and the training script's smoke run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from selector.agents import Agent
from selector.data import Example
from selector.early_stop import stream_generate
from selector.relay import Relay, RelayConfig
from selector.shards import ShardWriter
from selector.stop_head import StopHead, answer_stated_labels, unit_boundaries
from tests.test_early_stop import make_cycle_lm


@pytest.fixture(scope="module")
def cycle(tmp_path_factory):
    return Agent.from_pretrained(make_cycle_lm(tmp_path_factory.mktemp("models") / "cycle"), device="cpu")


def planted_head(folder, hidden_size: int, bias: float, small_model: str | None = None):
    """A head that ignores the state: p = sigmoid(bias) at every boundary."""
    head = StopHead(hidden_size, -1, small_model)
    with torch.no_grad():
        head.linear.weight.zero_()
        head.linear.bias.fill_(bias)
    head.save_pretrained(folder)
    return folder


def test_training_boundaries_and_states_are_the_streams(cycle, one_thread):
    """unit_boundaries (training) finds exactly the stream's check points, and a boundary's state is the
    hidden state a teacher-forced forward gives the last kept token (what traces store)."""
    prompt = cycle.format_chat("What is 2 + 3?")
    seen = []
    stream = stream_generate(
        cycle, prompt, max_new_tokens=23, hidden_layer=-1,
        should_stop=lambda b: seen.append((len(b.token_ids), b.hidden.clone())) and False,
    )  # fmt: skip
    ids = stream.generation.token_ids
    assert [k for k, _ in seen] == unit_boundaries(cycle.tokenizer, ids) and len(seen) >= 3
    states = cycle.hidden_states_of([prompt], [ids], layer=-1)[0]
    for k, h in seen:
        assert torch.allclose(h.float(), states[k - 1], atol=1e-4)
    plain = stream_generate(cycle, prompt, max_new_tokens=23)  # asking for states changes no token
    assert plain.generation.token_ids == ids


@pytest.mark.parametrize(
    ("max_new_tokens", "stop_at", "finish"),
    [(23, None, "length"), (40, 2, "early_stop"), (23, 1, "early_stop")],
)
def test_recorded_states_are_the_teacher_forced_ones(cycle, one_thread, max_new_tokens, stop_at, finish):
    """record_layer: the generation's hidden_states are each kept token's state from the decoding steps,
    equal to a teacher-forced forward (what the relay's selector read before, at the cost of a second
    forward), whether the stream ran to its cap or stopped at a boundary; no token changes."""
    prompt = cycle.format_chat("What is 2 + 3?")
    rule = None if stop_at is None else (lambda b: b.units >= stop_at)
    stream = stream_generate(cycle, prompt, max_new_tokens=max_new_tokens, record_layer=-1, should_stop=rule)
    gen = stream.generation
    assert gen.finish_reason == finish
    states = cycle.hidden_states_of([prompt], [gen.token_ids], layer=-1)[0]
    assert gen.hidden_states.shape == states.shape
    assert torch.allclose(gen.hidden_states, states.float(), atol=1e-4)
    plain = stream_generate(cycle, prompt, max_new_tokens=max_new_tokens, should_stop=rule)
    assert plain.generation.token_ids == gen.token_ids and plain.generation.hidden_states is None


@pytest.mark.parametrize("early_stop", ["head", "none"])
def test_streamed_relay_selects_on_the_streams_own_states(
    tiny_lm_dir, tmp_path, one_thread, monkeypatch, early_stop
):
    """A batch-1 relay whose selector reads hidden states streams (with an early stop that never fires, or
    none): the selector gets the states the decoding steps computed (no second forward over the reasoning,
    whose time no stage counted) and selects what a batched relay (one generate call) selects."""
    from selector.scorer import ScorerConfig, TokenSelector

    small = Agent.from_pretrained(str(tiny_lm_dir), device="cpu")
    config = ScorerConfig(hidden_layer=-1, hidden_size=small.model.config.hidden_size, d_model=16,
                          granularity="word", small_vocab_size=len(small.tokenizer))  # fmt: skip
    torch.manual_seed(0)
    selector = TokenSelector(config).eval()
    folder = planted_head(tmp_path / "head", small.model.config.hidden_size, -8.0)
    ex = [Example("q0", "What is 2 + 3?", "5")]
    kw = dict(gate="always", reason_tokens=12, budget=0.5, granularity="word")
    batched = RelayConfig(**kw, batch_size=2)
    assert not Relay(small, small, selector, batched).streams
    plain = Relay(small, small, selector, batched).run(ex, progress=False)[0]

    def refuse(*args, **kwargs):
        raise AssertionError("the streamed relay ran a second forward for the selector's states")

    monkeypatch.setattr(small, "hidden_states_of", refuse)
    stop = {"early_stop": "head", "stop_head": str(folder)} if early_stop == "head" else {}
    relay = Relay(small, small, selector, RelayConfig(**kw, batch_size=1, **stop))
    assert relay.streams
    streamed = relay.run(ex, progress=False)[0]
    assert streamed.small_finish == "length" and streamed.reasoning == plain.reasoning
    assert streamed.transfer_text == plain.transfer_text and streamed.answer == plain.answer


def test_answer_stated_labels():
    class Chars:  # a tokenizer whose tokens are characters
        def decode(self, ids, skip_special_tokens=True):
            return "".join(chr(i) for i in ids)

    text = "We add. So x is 5. Done."
    ids = [ord(c) for c in text]
    points = [7, 18, 24]
    assert answer_stated_labels(Chars(), ids, points, "5") == [False, True, True]
    assert answer_stated_labels(Chars(), ids, points, None) == [False, False, False]


@pytest.mark.parametrize(("bias", "finish"), [(8.0, "early_stop"), (-8.0, "length")])
def test_relay_head_signal_stops_where_the_planted_head_says(cycle, tmp_path, one_thread, bias, finish):
    folder = planted_head(tmp_path / "head", cycle.model.config.hidden_size, bias)
    ex = [Example("q0", "What is 2 + 3?", "5")]
    cfg = RelayConfig(gate="always", selector="full", reason_tokens=30, batch_size=1,
                      early_stop="head", stop_head=str(folder), stop_threshold=0.9)  # fmt: skip
    r = Relay(cycle, cycle, "full", cfg).run(ex, progress=False)[0]
    assert r.small_finish == finish
    if finish == "early_stop":  # p = sigmoid(8) >= 0.9 at the first boundary
        assert r.stop_checks == 1 and r.reasoning == " sky is blue."
    else:
        assert r.stop_checks >= 5 and r.stages["small_reasoning"].new_tokens == 30


def test_save_load_round_trip_and_strict_loading(tmp_path):
    torch.manual_seed(0)
    head = StopHead(8, -2, "qwen2.5-coder-0.5b-instruct", 0.8, {"trained on": "3 traces"})
    x = torch.randn(64, 8)
    y = (x[:, 0] + 0.1 * torch.randn(64) > 0).float()
    head.fit(x, y)
    head.save_pretrained(tmp_path / "h")
    assert {p.name for p in (tmp_path / "h").iterdir()} >= {"config.json", "model.safetensors", "README.md"}
    back = StopHead.from_pretrained(tmp_path / "h")
    for name, tensor in head.state_dict().items():
        assert torch.equal(tensor, back.state_dict()[name]), name
    assert (back.hidden_layer, back.small_model, back.threshold) == (-2, "qwen2.5-coder-0.5b-instruct", 0.8)
    assert torch.allclose(head(x), back(x))
    assert "trained on: 3 traces" in (tmp_path / "h" / "README.md").read_text()
    # the card regenerates from config.json byte for byte
    assert (tmp_path / "h" / "README.md").read_text() == back.model_card()
    weights = load_file(tmp_path / "h" / "model.safetensors")
    weights.pop("scale")
    save_file(weights, tmp_path / "h" / "model.safetensors")
    with pytest.raises(RuntimeError, match="scale"):
        StopHead.from_pretrained(tmp_path / "h")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        StopHead.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="not a stop head folder"):
        StopHead.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="hub could not provide it"):
        StopHead.from_pretrained("no-such-user/no-such-stop-head")


def test_fit_recovers_a_planted_direction():
    torch.manual_seed(1)
    x = torch.randn(400, 6) * torch.tensor([1.0, 5, 5, 5, 5, 5])
    y = (x[:, 0] > 0.3).float()
    head = StopHead(6)
    head.fit(x, y)
    p = head(x)
    assert ((p > 0.5).float() == y).float().mean() > 0.95
    with pytest.raises(ValueError, match="both kinds"):
        StopHead(6).fit(x, torch.zeros(400))


def test_a_head_for_another_model_is_refused_before_any_generation(cycle, tmp_path):
    wide = planted_head(tmp_path / "wide", cycle.model.config.hidden_size + 1, 0.0)
    cfg = RelayConfig(gate="always", selector="full", early_stop="head", stop_head=str(wide))
    with pytest.raises(ValueError, match="hidden states"):
        Relay(cycle, cycle, "full", cfg)
    named = planted_head(tmp_path / "named", cycle.model.config.hidden_size, 0.0, "some-other-model")
    with pytest.raises(ValueError, match="trained for 'some-other-model'"):
        Relay(
            cycle,
            cycle,
            "full",
            RelayConfig(gate="always", selector="full", early_stop="head", stop_head=str(named)),
        )


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"early_stop": "head"}, "needs stop_head"),
        ({"early_stop": "confidence", "stop_head": "some/folder"}, "only read with early_stop 'head'"),
    ],
)
def test_bad_head_settings_fail_in_the_config(kw, message):
    with pytest.raises(ValueError, match=message):
        RelayConfig(**kw)


def _planted_traces(folder, tokenizer, n: int = 40, task: str = "toy") -> None:
    """Traces whose hidden states carry the label on one coordinate (plus noise), answer '5' in sentence 3."""
    rng = np.random.default_rng(0)
    writer = ShardWriter(folder)
    records = []
    for i in range(n):
        text = f"We start {i}. Then we add two. So x is 5. Check it. Done now."
        ids = tokenizer.encode(text, add_special_tokens=False)
        points = unit_boundaries(tokenizer, ids)
        done = answer_stated_labels(tokenizer, ids, points, "5")
        hidden = rng.normal(size=(len(ids), 16)).astype(np.float32)
        for k, y in zip(points, done):
            hidden[k - 1, 0] = 3.0 if y else -3.0
        records.append({"id": f"{task}-1-{i}", "question": "q", "answer": "5", "images": [], "choices": None,
                        "prompt": "p", "reasoning": text, "reasoning_token_ids": ids,
                        "reasoning_logprobs": [0.0] * len(ids), "small_answer": "5", "small_correct": True,
                        "finish_reason": "stop", "prompt_tokens": 3, "new_tokens": len(ids), "prefill_s": 0.0,
                        "decode_s": 0.0, "model": "tiny", "hidden_states": hidden, "answer_line": ""})  # fmt: skip
    writer.write(records)


def test_train_stop_head_script_writes_a_release_and_never_overwrites(
    tiny_lm_dir, small_tok, tmp_path, capsys
):
    from scripts.train_stop_head import main

    _planted_traces(tmp_path / "traces", small_tok)
    _planted_traces(tmp_path / "other", small_tok, n=20, task="other")
    out = tmp_path / "head"
    argv = ["--traces", str(tmp_path / "traces"), str(tmp_path / "other"), "--small-model", str(tiny_lm_dir),
            "--out", str(out), "--quiet", "--val-fraction", "0.3", "--leave-one-task-out"]  # fmt: skip
    assert main(argv) == 0
    assert {p.name for p in out.iterdir()} >= {
        "config.json",
        "model.safetensors",
        "README.md",
        "validation.json",
        "validation_lofo.json",
    }
    table = json.loads((out / "validation.json").read_text())
    assert {r["task"] for r in table} == {"toy", "other", "all"}
    row = table[-1]
    assert row["task"] == "all" and row["auroc"] > 0.95
    assert row["at_0.9"]["premature"] == 0.0 and row["at_0.9"]["stopped"] > 0.9
    assert 0 < row["at_0.9"]["tokens_saved"] < 1
    lofo = json.loads((out / "validation_lofo.json").read_text())
    assert sorted(r["task"] for r in lofo) == ["other", "toy"] and all(r["auroc"] > 0.95 for r in lofo)
    assert "left out of the fit" in (out / "README.md").read_text()
    head = StopHead.from_pretrained(out)
    assert head.hidden_size == 16 and head.small_model == tiny_lm_dir.name
    capsys.readouterr()
    assert main(argv) == 2
    assert "not empty" in capsys.readouterr().err


def test_the_shipped_stop_head_loads_and_fits_its_small_model():
    from pathlib import Path
    from types import SimpleNamespace

    folder = Path(__file__).resolve().parents[1] / "checkpoints" / "qwen2.5-coder-0.5b-stop-head"
    head = StopHead.from_pretrained(folder)
    assert (head.hidden_size, head.hidden_layer, head.small_model) == (896, -1, "qwen2.5-coder-0.5b-instruct")
    p = head(torch.randn(4, 896))
    assert p.shape == (4,) and bool(((p >= 0) & (p <= 1)).all())
    qwen = SimpleNamespace(
        hidden_size=896, num_hidden_layers=24, _name_or_path="models/qwen2.5-coder-0.5b-instruct"
    )
    head.check_compatible(qwen)
    with pytest.raises(ValueError, match="trained for"):
        head.check_compatible(
            SimpleNamespace(hidden_size=896, num_hidden_layers=24, _name_or_path="other/model")
        )
    overall = json.loads((folder / "validation.json").read_text())[-1]
    assert overall["task"] == "all" and overall["auroc"] > 0.8


def test_the_selector_signal_reads_the_streams_states(cycle, one_thread, monkeypatch):
    """early_stop selector with a selector that reads hidden states: each check scores the reasoning so far
    on the states the stream recorded, never a second forward over it."""
    from selector.scorer import ScorerConfig, TokenSelector

    small = cycle  # monkeypatch restores it after the test
    config = ScorerConfig(hidden_layer=-1, hidden_size=small.model.config.hidden_size, d_model=16,
                          granularity="word", small_vocab_size=len(small.tokenizer))  # fmt: skip
    torch.manual_seed(0)
    selector = TokenSelector(config).eval()

    def refuse(*args, **kwargs):
        raise AssertionError("a check ran a second forward for the selector's states")

    monkeypatch.setattr(small, "hidden_states_of", refuse)
    cfg = RelayConfig(gate="always", reason_tokens=30, batch_size=1, budget=0.5, granularity="word",
                      early_stop="selector")  # fmt: skip
    r = Relay(small, small, selector, cfg).run([Example("q0", "What is 2 + 3?", "5")], progress=False)[0]
    assert r.stop_checks >= 1 and r.reasoning is not None
