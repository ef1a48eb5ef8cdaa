"""scripts/bench_dtype.py on a tiny model: every dtype row, ratios against float32, clear refusals."""

from __future__ import annotations

import json

import pytest

from scripts.bench_dtype import fastest, main


def test_bench_dtype_writes_a_row_per_model_and_dtype(tiny_lm_dir, tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["--models", str(tiny_lm_dir), "--dtypes", "float32,bfloat16", "--prompt-tokens", "40"]
    assert main([*args, "--decode-tokens", "3", "--repeats", "1", "--out", str(out)]) == 0
    result = json.loads((out / "bench_dtype.json").read_text())
    rows = {r["dtype"]: r for r in result["rows"]}
    assert set(rows) == {"float32", "bfloat16"} and result["threads"] == 1
    ref = rows["float32"]
    assert ref["prefill_ratio"] == 1.0 and ref["decode_ratio"] == 1.0 and ref["same_greedy_tokens"]
    assert ref["gold_logprob_diff"] == 0.0 and ref["prompt_tokens"] >= 40
    low = rows["bfloat16"]
    assert low["prefill_s"] > 0 and low["decode_s_per_token"] > 0 and low["reference_dtype"] == "float32"
    assert abs(low["gold_logprob_diff"]) < 5.0  # a rounding difference, not another model
    printed = capsys.readouterr().out
    assert "bfloat16" in printed
    # the recommendation is the measured minimum of each phase, printed and saved
    best = result["fastest"][tiny_lm_dir.name]
    assert best["prefill"] == min(rows.values(), key=lambda r: r["prefill_s"])["dtype"]
    assert best["decode"] == min(rows.values(), key=lambda r: r["decode_s_per_token"])["dtype"]
    assert f"prefill {best['prefill']}, decode {best['decode']}" in printed


def test_fastest_picks_each_phase_per_model_on_constructed_rows():
    rows = [
        {"model": "a", "dtype": "float32", "prefill_s": 1.0, "decode_s_per_token": 0.08},
        {"model": "a", "dtype": "bfloat16", "prefill_s": 0.4, "decode_s_per_token": 0.09},
        {"model": "a", "dtype": "float16", "prefill_s": 2.0, "decode_s_per_token": 0.05},
        {"model": "b", "dtype": "float32", "prefill_s": 0.3, "decode_s_per_token": 0.2},
        {"model": "b", "dtype": "bfloat16", "prefill_s": 0.5, "decode_s_per_token": 0.1},
    ]
    assert fastest(rows) == {
        "a": {"prefill": "bfloat16", "decode": "float16"},
        "b": {"prefill": "float32", "decode": "bfloat16"},
    }


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--dtypes", "float8"], "unknown"),
        (["--repeats", "0"], "--repeats"),
        (["--models", "nowhere"], "not a model"),
    ],
)
def test_bench_dtype_refuses_bad_options_before_loading(tiny_lm_dir, tmp_path, capsys, extra, message):
    args = ["--models", str(tiny_lm_dir), "--out", str(tmp_path), *extra]
    with pytest.raises(SystemExit) as err:
        main(args)
    assert err.value.code == 2 and message in capsys.readouterr().err
