"""scripts/bench_dtype.py on a tiny model: every dtype row, ratios against float32, clear refusals."""

from __future__ import annotations

import json

import pytest

from scripts.bench_dtype import main


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
    assert "bfloat16" in capsys.readouterr().out


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
