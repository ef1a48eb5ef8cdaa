"""A CPU smoke run of scripts.bench_scorer (hidden heads, a tiny encoder) and the JSON it writes."""

from __future__ import annotations

import json
import sys

from scripts import bench_scorer
from tests.selector_fixtures import make_tiny_bert


def test_bench_scorer_times_each_variant_and_writes_json(tmp_path, monkeypatch, capsys):
    bert = make_tiny_bert(tmp_path / "tiny-bert")
    monkeypatch.setattr(bench_scorer, "minilm_dir", lambda: bert)
    monkeypatch.setattr(bench_scorer, "SMALL_MODEL", str(tmp_path / "absent"))  # 4-character tokens
    out = tmp_path / "bench.json"
    argv = ["bench_scorer", "--units", "24", "--repeats", "2", "--hidden-size", "16", "--d-model", "16"]
    argv += ["--train-batch", "2", "--train-units", "8", "--train-steps", "1", "--encoder-layers", "1"]
    monkeypatch.setattr(sys, "argv", [*argv, "--threads", "1", "--out", str(out)])
    bench_scorer.main()
    rows = {r["backbone"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"hidden (mlp head)", "hidden (transformer head)", "encoder", "encoder (1 layers)"}
    for r in rows.values():
        assert r["ms_per_trace"] > 0 and r["train_traces_per_s"] > 0 and r["units"] == 24
    assert rows["hidden (mlp head)"]["target_ms"] == 2.0 and rows["encoder"]["target_ms"] == 40.0
    assert "hidden (mlp head)" in capsys.readouterr().out
