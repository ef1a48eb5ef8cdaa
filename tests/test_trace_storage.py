"""Hidden states in traces: stored as float32 Array2D, read back as numpy; older float64-list folders still load."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from selector.reasoning import view_from_trace
from selector.shards import ShardWriter, read_records, records_table, shard_files
from selector.traces import load_traces


def _record(i: int, n: int, width: int = 4, hidden=True) -> dict:
    states = np.random.default_rng(i).normal(size=(n, width)) if hidden else None
    return {"id": f"q{i}", "question": "1 + 1?", "reasoning": "So 2.", "hidden_states": states}


def _write_old_shard(folder, records: list[dict], index: int = 0) -> None:
    """A shard as `tokenrelay reason` wrote it before issue 15: hidden states as float64 nested lists."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{**r, "hidden_states": r["hidden_states"].tolist()} for r in records]
    pq.write_table(pa.Table.from_pylist(rows), folder / f"shard-{index:06d}-r0-old{index:05d}.parquet")


def test_hidden_states_are_stored_as_float32_and_load_as_arrays(tmp_path):
    records = [_record(0, 3), _record(1, 5), _record(2, 0)]  # a trace may keep no token
    ShardWriter(tmp_path / "t").write(records)
    stored = pq.read_schema(shard_files(tmp_path / "t")[0]).field("hidden_states").type
    assert isinstance(stored, pa.ExtensionType) and stored.storage_type == pa.list_(pa.list_(pa.float32()))
    rows = {r["id"]: r for r in load_traces(tmp_path / "t")}
    for rec in records:
        got = rows[rec["id"]]["hidden_states"]
        assert (
            isinstance(got, np.ndarray)
            and got.dtype == np.float32
            and got.shape == (len(rec["hidden_states"]), 4)
        )
        np.testing.assert_array_equal(got, rec["hidden_states"].astype(np.float32))
    assert rows["q0"]["question"] == "1 + 1?"  # the other columns stay Python objects


def test_records_table_takes_tensors_lists_and_missing_states():
    table = records_table(
        [
            {"id": "a", "hidden_states": torch.ones(2, 3, dtype=torch.bfloat16)},
            {"id": "b", "hidden_states": [[1.0, 2.0, 3.0]]},
            {"id": "c", "hidden_states": None},
        ]
    )
    assert table.column_names == ["id", "hidden_states"]
    states = table.column("hidden_states").combine_chunks().storage  # datasets' to_pylist fails on null rows
    assert states.to_pylist() == [[[1.0] * 3] * 2, [[1.0, 2.0, 3.0]], None]
    with pytest.raises(ValueError, match="one width"):
        records_table(
            [{"id": "a", "hidden_states": np.ones((2, 3))}, {"id": "b", "hidden_states": np.ones((1, 4))}]
        )


def test_old_float64_folder_loads_cast_and_resumes_in_the_new_format(tmp_path):
    folder = tmp_path / "old"
    old = [_record(0, 3), _record(1, 2)]
    _write_old_shard(folder, old)
    rows = {r["id"]: r for r in load_traces(folder)}
    assert rows["q1"]["hidden_states"].dtype == np.float32
    np.testing.assert_array_equal(rows["q1"]["hidden_states"], old[1]["hidden_states"].astype(np.float32))
    # A run resumed in the old folder with the new code writes float32 shards beside the old one.
    ShardWriter(folder).write([_record(2, 4)])
    both = load_traces(folder)
    assert sorted(both["id"]) == ["q0", "q1", "q2"]
    assert all(r["hidden_states"].dtype == np.float32 for r in both)


def test_unreadable_old_folder_fails_in_one_line_naming_it(tmp_path):
    folder = tmp_path / "broken"
    _write_old_shard(folder, [_record(0, 2, width=4), _record(1, 2, width=5)])  # two widths in one column
    with pytest.raises(ValueError) as err:
        load_traces(folder)
    message = str(err.value)
    assert str(folder) in message and "different widths" in message and "\n" not in message


def test_views_read_arrays_and_lists_alike():
    rec = _record(0, 3)
    trace = {
        "question": "q",
        "reasoning": "One. Two.",
        "hidden_states": rec["hidden_states"].astype(np.float32),
    }
    from_array = view_from_trace(trace).hidden_states
    from_list = view_from_trace({**trace, "hidden_states": rec["hidden_states"].tolist()}).hidden_states
    assert from_array.dtype == from_list.dtype == torch.float32
    assert torch.equal(from_array, from_list)


def test_rows_without_states_beside_rows_with_them(tmp_path):
    ShardWriter(tmp_path / "t").write([_record(0, 2), _record(1, 2, hidden=False)])
    rows = {r["id"]: r for r in read_records(tmp_path / "t")}
    assert view_from_trace({**rows["q1"], "reasoning": "x."}).hidden_states is None
    assert view_from_trace({**rows["q0"], "reasoning": "x."}).hidden_states.shape == (2, 4)
