"""``dtype: fastest``: measured once per machine and model on a tiny model, cached, chosen per workload."""

from __future__ import annotations

import json

import pytest
import torch

from selector.agent_types import DTYPES, AgentConfig
from selector.dtype_choice import _machine_key, choose_dtype, fastest_dtype
from selector.relay import Relay, RelayConfig

TIMINGS = {  # an EPYC-like machine: bfloat16 prefills fastest, float16 decodes fastest
    "float32": {"prefill_s": 1.0, "decode_s_per_token": 0.08},
    "bfloat16": {"prefill_s": 0.4, "decode_s_per_token": 0.09},
    "float16": {"prefill_s": 2.0, "decode_s_per_token": 0.05},
}


def test_choose_dtype_weighs_prefill_for_answers_and_decode_for_reasoning():
    assert choose_dtype(TIMINGS, "answer") == "bfloat16"
    assert choose_dtype(TIMINGS, "reason") == "float16"
    assert choose_dtype({"float32": TIMINGS["float32"]}, "reason") == "float32"
    # within 3% the earlier candidate (full precision first) wins: noise never rounds a model
    near = {
        "float32": {"prefill_s": 1.0, "decode_s_per_token": 0.0876},
        "bfloat16": {"prefill_s": 0.8, "decode_s_per_token": 0.0870},
    }
    assert choose_dtype(near, "reason") == "float32"
    assert choose_dtype(dict(reversed(near.items())), "reason") == "bfloat16"
    with pytest.raises(ValueError, match="unknown workload"):
        choose_dtype(TIMINGS, "train")
    with pytest.raises(ValueError, match="no timings"):
        choose_dtype({}, "answer")


def test_fastest_dtype_measures_once_then_reads_the_cache(tiny_lm_dir, tmp_path, one_thread):
    cache = tmp_path / "dtype_speed.json"
    first = fastest_dtype(str(tiny_lm_dir), "reason", candidates=("float32", "bfloat16"), cache_file=cache)
    assert not first.cached and first.dtype in ("float32", "bfloat16")
    assert set(first.timings) == {"float32", "bfloat16"}
    assert all(t["prefill_s"] > 0 and t["decode_s_per_token"] > 0 for t in first.timings.values())
    assert first.dtype == choose_dtype(first.timings, "reason")
    stored = json.loads(cache.read_text())
    assert list(stored) == [_machine_key(str(tiny_lm_dir), "cpu")]
    # another workload reads the same timings: no second measurement
    second = fastest_dtype(str(tiny_lm_dir), "answer", candidates=("float32", "bfloat16"), cache_file=cache)
    assert second.cached and second.timings == first.timings
    assert second.dtype == choose_dtype(first.timings, "answer")
    assert "cached" in second.summary() and second.dtype in second.summary()
    # a new candidate is measured alone; the stored ones are kept as they were
    third = fastest_dtype(str(tiny_lm_dir), "answer", cache_file=cache)
    assert not third.cached and set(third.timings) == set(DTYPES)
    assert {d: third.timings[d] for d in first.timings} == first.timings


def test_an_image_text_model_is_timed_on_text(tiny_vlm_dir, tmp_path, one_thread):
    choice = fastest_dtype(
        str(tiny_vlm_dir), "answer", candidates=("float32",), cache_file=tmp_path / "c.json"
    )
    assert choice.dtype == "float32" and choice.timings["float32"]["prefill_s"] > 0


def test_an_unreadable_cache_is_measured_again(tiny_lm_dir, tmp_path, one_thread):
    cache = tmp_path / "dtype_speed.json"
    cache.write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable dtype timings"):
        choice = fastest_dtype(str(tiny_lm_dir), "answer", candidates=("float32",), cache_file=cache)
    assert choice.dtype == "float32" and not choice.cached
    assert _machine_key(str(tiny_lm_dir), "cpu") in json.loads(cache.read_text())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"workload": "train"}, "unknown workload"),
        ({"candidates": ("float8",)}, "candidate dtypes"),
        ({"candidates": ()}, "candidate dtypes"),
    ],
)
def test_bad_requests_fail_before_any_model_loads(kwargs, message, tmp_path):
    workload = kwargs.pop("workload", "answer")
    with pytest.raises(ValueError, match=message):
        fastest_dtype("/no/model", workload, cache_file=tmp_path / "c.json", **kwargs)


def test_fastest_is_a_relay_setting_not_an_agent_one():
    assert RelayConfig(large="/no/large", dtype="fastest").dtype == "fastest"
    assert RelayConfig(large="/no/large", small_dtype="fastest").small_dtype == "fastest"
    with pytest.raises(ValueError, match="dtype must be one of"):
        RelayConfig(large="/no/large", dtype="fastes")
    with pytest.raises(ValueError, match="depends on the model's job"):
        AgentConfig(path="/no/model", dtype="fastest")


def _seed(cache_file, path, timings) -> None:
    """Timings as a measurement on this machine would have stored them (so the choice is known)."""
    stored = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    stored[_machine_key(str(path), "cpu")] = timings
    cache_file.write_text(json.dumps(stored))


def test_a_relay_loads_each_model_in_its_fastest_dtype(
    tiny_lm_dir, tiny_plain_lm_dir, tmp_path, monkeypatch, one_thread
):
    monkeypatch.setenv("TOKENRELAY_CACHE", str(tmp_path))
    cache = tmp_path / "dtype_speed.json"
    _seed(cache, tiny_lm_dir, TIMINGS)  # the small model reasons: float16
    _seed(cache, tiny_plain_lm_dir, TIMINGS)  # the large model answers: bfloat16
    config = RelayConfig(
        small=str(tiny_lm_dir), large=str(tiny_plain_lm_dir), dtype="fastest", gate="always", selector="first",
        device="cpu", reason_tokens=4, answer_tokens=2,
    )  # fmt: skip
    lines: list[str] = []
    resolved = config.resolve_dtypes(log=lines.append)
    assert (resolved.dtype, resolved.small_dtype) == ("bfloat16", "float16")
    assert len(lines) == 2 and "large model" in lines[0] and "small model" in lines[1]
    # a dtype named in the config is kept: only `fastest` is measured
    kept = RelayConfig(small=str(tiny_lm_dir), large=str(tiny_plain_lm_dir), small_dtype="fastest")
    assert (kept.resolve_dtypes(log=None).dtype, kept.resolve_dtypes(log=None).small_dtype) == (
        "float32",
        "float16",
    )
    assert RelayConfig(large="/no/large").resolve_dtypes(log=None).dtype == "float32"
    relay = Relay.from_config(config)
    assert relay.large.model.dtype == torch.bfloat16 and relay.small.model.dtype == torch.float16
    assert relay.answer("What is 2 + 3?").path == "transfer"  # the models run in those dtypes


def test_the_latency_benchmark_measures_the_baseline_as_a_reasoning_workload(
    tiny_lm_dir, tiny_plain_lm_dir, tmp_path, monkeypatch, one_thread
):
    from scripts.bench_latency import BenchLatencyConfig

    monkeypatch.setenv("TOKENRELAY_CACHE", str(tmp_path))
    _seed(tmp_path / "dtype_speed.json", tiny_plain_lm_dir, TIMINGS)
    relay = RelayConfig(small=str(tiny_lm_dir), large=str(tiny_plain_lm_dir), batch_size=1, dtype="fastest",
                        small_dtype="float32", device="cpu")  # fmt: skip
    config = BenchLatencyConfig(data="d.jsonl", relay=relay, large_reason_dtype="fastest")
    resolved = config.resolve_dtypes(log=None)
    assert (resolved.relay.dtype, resolved.relay.small_dtype, resolved.large_reason_dtype) == (
        "bfloat16", "float32", "float16",
    )  # fmt: skip
    assert resolved.separate_own  # the baseline gets its own copy at its own fastest dtype


def test_infer_measures_fastest_once_and_says_so_on_stderr(
    tiny_lm_dir, tmp_path, monkeypatch, capsys, one_thread
):
    from selector.cli import main

    monkeypatch.setenv("TOKENRELAY_CACHE", str(tmp_path))
    args = ["infer", "--relay.small", str(tiny_lm_dir), "--relay.large", str(tiny_lm_dir), "--relay.device", "cpu",
            "--relay.dtype", "fastest", "--relay.gate", "always", "--relay.reason-tokens", "4",
            "--relay.answer-tokens", "2", "--relay.granularity", "word", "--question", "What is 2 + 3?"]  # fmt: skip
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "dtype fastest, large model" in captured.err and "measured now" in captured.err
    assert "timing " in captured.err and "once; cached in" in captured.err  # said before the minute it takes
    assert "dtype fastest" not in captured.out and "reasoning tokens" in captured.out
    assert main(args) == 0  # the second run reads the machine's timings
    assert "cached" in capsys.readouterr().err
    assert len(json.loads((tmp_path / "dtype_speed.json").read_text())) == 1  # one model, one entry
