"""`tokenrelay eval` and `tokenrelay label` with a model behind a real engine process (`tokenrelay serve`).

The engine serves the same tiny model that the in-process runs load, so answers and gold-answer
log-probs (from the engine's prompt log-probs) must agree with the in-process ones.
"""

from __future__ import annotations

import json

import pytest

from selector.agents import Agent
from selector.cli import main
from selector.evaluation import EvalConfig, run_eval
from selector.relay import RelayConfig
from selector.remote import RemoteConfig
from selector.scorer import ScorerConfig, TokenSelector
from selector.shards import ShardWriter, read_records
from tests.test_remote import _closed_port
from tests.test_serve import RELAY, start_server, stop_server
from training.label_job import LabelConfig, run_label

REASONINGS = ["First, 2 + 3 = 5. So the answer is 5.", "Let x = 3 and y = x + 4, so y is 7. Answer: 7"]


@pytest.fixture(scope="module")
def engine(tiny_lm_dir, tmp_path_factory):
    """A real `tokenrelay serve` process serving the tiny model as ``tokenrelay-large``."""
    config = {"relay": {**RELAY, "gate": "never", "large": str(tiny_lm_dir)}}
    proc, url = start_server(tmp_path_factory.mktemp("engine"), config, "engine")
    yield url
    stop_server(proc)


def _records(out) -> dict[tuple[str, str], dict]:
    rows = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    return {(r["condition"], r["id"]): r for r in rows}


@pytest.mark.parametrize("remote_small", [False, True])
def test_eval_with_remote_models_equals_in_process(
    remote_small, engine, tiny_lm_dir, arithmetic_jsonl, tmp_path, one_thread
):
    relay = RelayConfig(small=str(tiny_lm_dir), large=str(tiny_lm_dir), reason_tokens=8, answer_tokens=3,
                        granularity="word", device="cpu")  # fmt: skip
    options = {
        "data": str(arithmetic_jsonl), "limit": 2, "relay": relay, "conditions": ["large_direct", "relay"],
        "selectors": ["none", "full", "first"], "budgets": [0.5], "plot": False,
    }  # fmt: skip
    run_eval(EvalConfig(**options, out=str(tmp_path / "local")), progress=False)
    endpoint = RemoteConfig(base_url=engine, model="tokenrelay-large")
    remote = run_eval(
        EvalConfig(
            **options,
            out=str(tmp_path / "remote"),
            large_endpoint=endpoint,
            small_endpoint=endpoint if remote_small else None,
        ),
        progress=False,
    )
    assert remote["config"]["large_endpoint"]["base_url"] == engine  # recorded with the results
    want, got = _records(tmp_path / "local"), _records(tmp_path / "remote")
    assert got.keys() == want.keys() and len(want) == 2 * 4  # 2 questions x (direct + 3 relay cells)
    for key, w in want.items():
        g = got[key]
        assert (g["answer"], g["path"]) == (w["answer"], w["path"]), key
        assert g["gold_logprob"] == pytest.approx(w["gold_logprob"], abs=1e-4), key
        assert g["f_all"] == pytest.approx(w["f_all"], abs=1e-4), key
        assert g["reasoning"] == w["reasoning"] and g["transfer_text"] == w["transfer_text"], key


def _trace(i: int, reasoning: str) -> dict:
    return {
        "id": f"q{i}", "question": f"What is {i} + {i + 1}?", "answer": str(2 * i + 1), "images": [],
        "choices": None, "prompt": "p", "reasoning": reasoning, "reasoning_token_ids": [1, 2],
        "reasoning_logprobs": [-0.1, -0.2], "small_answer": "5", "small_correct": True,
        "finish_reason": "stop", "prompt_tokens": 10, "new_tokens": 2, "prefill_s": 0.1, "decode_s": 0.2,
        "model": "small",
    }  # fmt: skip


@pytest.mark.parametrize("method", ["loo", "solo"])
def test_label_with_a_remote_model_equals_in_process(engine, tiny_lm_dir, tmp_path, one_thread, method):
    traces = tmp_path / "traces"
    ShardWriter(traces).write([_trace(i, r) for i, r in enumerate(REASONINGS)])
    base = {"traces": str(traces), "model": str(tiny_lm_dir), "method": method, "units": "sentence",
            "accelerator": "cpu", "devices": 1, "progress_bar": False}  # fmt: skip
    run_label(
        LabelConfig(**base, out=str(tmp_path / "local")), Agent.from_pretrained(tiny_lm_dir, device="cpu")
    )
    endpoint = RemoteConfig(base_url=engine, model="tokenrelay-large")
    summary = run_label(
        LabelConfig(**{**base, "accelerator": "auto"}, out=str(tmp_path / "remote"), endpoint=endpoint)
    )
    assert summary["labelled"] == len(REASONINGS)
    want = {r["id"]: r for r in read_records(tmp_path / "local")}
    got = {r["id"]: r for r in read_records(tmp_path / "remote")}
    assert got.keys() == want.keys()
    for key, w in want.items():
        g = got[key]
        assert len(g["labels"]) == len(w["labels"]) > 1
        assert g["labels"] == pytest.approx(w["labels"], abs=1e-4)
        assert (g["f_all"], g["f_none"]) == pytest.approx((w["f_all"], w["f_none"]), abs=1e-4)
        assert g["labeler_model"] == f"tokenrelay-large@{engine}" and g["label_forward_passes"] > 0


def test_what_a_remote_model_cannot_do_is_refused_before_any_work(
    tiny_lm_dir, arithmetic_jsonl, tmp_path, capsys
):
    small = Agent.from_pretrained(tiny_lm_dir, device="cpu")
    selector = TokenSelector(
        ScorerConfig(hidden_layer=-1, hidden_size=32, small_model=str(tiny_lm_dir), d_model=32,
                     granularity="word", small_vocab_size=len(small.tokenizer))
    ).save_pretrained(tmp_path / "hidden-selector")  # fmt: skip
    dead = f"http://127.0.0.1:{_closed_port()}/v1"  # any request there would fail: none is made
    missing = str(tmp_path / "no-such-model")  # nor is any model loaded
    argv = ["eval", "--data", str(arithmetic_jsonl), "--relay.small", str(tiny_lm_dir), "--relay.large", missing,
            "--out", str(tmp_path / "eval"), "--selectors", json.dumps([str(selector)]), "--budgets", "[0.5]",
            "--small_endpoint.base_url", dead, "--small_endpoint.model", "m"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "'hidden' selector" in err and "selfinfo" in err and "Traceback" not in err
    assert not (tmp_path / "eval" / "cache").exists()

    traces = tmp_path / "traces"
    ShardWriter(traces).write([_trace(0, REASONINGS[0])])
    argv = ["label", "--traces", str(traces), "--model", missing, "--out", str(tmp_path / "labels"),
            "--method", "gradient", "--endpoint.base_url", dead, "--endpoint.model", "m"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "gradient labeling needs the large model's weights" in err and "Traceback" not in err
    assert not (tmp_path / "labels").exists()
