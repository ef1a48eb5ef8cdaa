"""scripts/label_baselines.py on a small labelled folder: the oracle recovers everything, first nothing."""

from __future__ import annotations

import json

import pytest

from scripts.label_baselines import main
from selector.shards import ShardWriter


def test_baselines_on_labels_where_the_last_unit_carries_the_gain(tmp_path, capsys):
    records = [
        {
            "id": f"t{i}",
            "labels": [0.0, 0.0, 0.0, 2.0],
            "unit_token_counts": [5, 5, 5, 5],
            "f_all": -1.0,
            "f_none": -3.0,
        }
        for i in range(40)
    ]
    ShardWriter(tmp_path / "labels").write(records)
    out = tmp_path / "b.json"
    assert main(["--labels", str(tmp_path / "labels"), "--seeds", "0,1", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert rows["oracle"]["gain_recovered"] == pytest.approx(1.0)
    assert rows["last"]["gain_recovered"] == pytest.approx(1.0)
    assert rows["first"]["gain_recovered"] == pytest.approx(0.0) and rows["first"]["mean_gain"] == 0.0
    assert "oracle" in capsys.readouterr().out


def test_bad_budget_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        main(["--labels", str(tmp_path), "--budget", "0"])
