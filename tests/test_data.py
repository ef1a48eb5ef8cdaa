"""Tests for selector.data: every source format, column mapping, images and each error."""

from __future__ import annotations

import csv
import json

import datasets
import pytest
from PIL import Image

from selector.data import ColumnMap, DataError, Example, examples_to_records, load_examples, write_jsonl

ROWS = [
    {"id": "a", "question": "What is 6*7?", "answer": 42},
    {"id": "b", "question": "What is 1.5*2?", "answer": 3.0},
    {"id": "c", "question": "Pick one", "answer": "x", "choices": ["x", "y"]},
]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _png(path, color=(255, 0, 0)):
    Image.new("RGB", (4, 4), color).save(path)
    return path


def test_jsonl_basic_and_answer_casting(tmp_path):
    exs = load_examples(_jsonl(tmp_path / "d.jsonl", ROWS))
    assert [e.id for e in exs] == ["a", "b", "c"]
    assert [e.answer for e in exs] == ["42", "3", "x"]
    assert exs[0].images == [] and exs[0].choices is None
    assert exs[2].choices == ["x", "y"]


def test_json_list_and_limit(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(ROWS))
    exs = load_examples(path, limit=2)
    assert [e.id for e in exs] == ["a", "b"]
    assert load_examples(str(path), limit=0) == []


def test_float_answer_keeps_fraction_and_string_kept(tmp_path):
    rows = [{"question": "q1", "answer": 2.5}, {"question": "q2", "answer": "3.0"}]
    exs = load_examples(_jsonl(tmp_path / "d.jsonl", rows))
    assert [e.answer for e in exs] == ["2.5", "3.0"]
    assert [e.id for e in exs] == ["0", "1"]  # no id column: row index


def test_csv_keeps_exact_strings_and_json_choices(tmp_path):
    path = tmp_path / "d.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["qid", "prompt", "gold", "choices"])
        w.writerow([1, "Code?", "007", json.dumps(["007", "7"])])
        w.writerow([2, "Two?", "2", ""])
    cols = ColumnMap(question="prompt", answer="gold", id="qid")
    exs = load_examples(path, cols)
    assert exs[0] == Example(id="1", question="Code?", answer="007", choices=["007", "7"])
    assert exs[1].choices is None


def test_parquet(tmp_path):
    path = tmp_path / "d.parquet"
    datasets.Dataset.from_list(
        [{"id": r["id"], "question": r["question"], "answer": "1"} for r in ROWS]
    ).to_parquet(path)
    exs = load_examples(path, limit=2)
    assert [(e.id, e.answer) for e in exs] == [("a", "1"), ("b", "1")]


def test_save_to_disk_dataset_with_image_feature(tmp_path):
    img = _png(tmp_path / "red.png")
    ds = datasets.Dataset.from_dict({"question": ["color?"], "answer": ["red"], "image": [str(img)]})
    ds = ds.cast_column("image", datasets.Image())
    ds.save_to_disk(tmp_path / "saved")
    img.unlink()  # the saved dataset embeds the bytes: loading must not need the original file
    (ex,) = load_examples(tmp_path / "saved")
    assert ex.id == "0" and ex.answer == "red"
    assert len(ex.images) == 1 and ex.images[0].size == (4, 4)  # decoded from stored bytes


def test_datasetdict_splits(tmp_path):
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"question": ["q"], "answer": ["t"]}),
            "test": datasets.Dataset.from_dict({"question": ["q", "r"], "answer": ["s", "u"]}),
        }
    )
    dd.save_to_disk(tmp_path / "dd")
    assert load_examples(tmp_path / "dd")[0].answer == "t"
    assert [e.answer for e in load_examples(tmp_path / "dd", split="test")] == ["s", "u"]
    with pytest.raises(DataError, match=r"'validation'.*\['train', 'test'\]"):
        load_examples(tmp_path / "dd", split="validation")


def test_datasetdict_single_split_is_default(tmp_path):
    dd = datasets.DatasetDict({"dev": datasets.Dataset.from_dict({"question": ["q"], "answer": ["a"]})})
    dd.save_to_disk(tmp_path / "dd")
    assert load_examples(tmp_path / "dd")[0].answer == "a"


def test_images_relative_list_and_dict(tmp_path):
    (tmp_path / "img").mkdir()
    _png(tmp_path / "img" / "a.png")
    _png(tmp_path / "img" / "b.png")
    png_bytes = (tmp_path / "img" / "a.png").read_bytes()
    rows = [
        {"question": "q0", "answer": "1", "image": "img/a.png"},
        {"question": "q1", "answer": "1", "image": ["img/a.png", "img/b.png"]},
        {"question": "q2", "answer": "1", "image": None},
    ]
    sub = tmp_path / "sub"
    sub.mkdir()
    # relative paths resolve against the data file's folder, not the working directory
    path = _jsonl(tmp_path / "d.jsonl", rows)
    exs = load_examples(path)
    assert exs[0].images == [str(tmp_path / "img" / "a.png")]
    assert len(exs[1].images) == 2 and exs[2].images == []

    ds = datasets.Dataset.from_list(
        [{"question": "q", "answer": "1", "pic": {"bytes": png_bytes, "path": None}}]
    ).cast_column("pic", datasets.Image(decode=False))
    ds.to_parquet(tmp_path / "p.parquet")
    (ex,) = load_examples(tmp_path / "p.parquet", ColumnMap(image="pic"))
    assert ex.images[0].size == (4, 4)


def test_write_jsonl_roundtrip_with_pil_images(tmp_path):
    _png(tmp_path / "a.png")
    exs = [
        Example(id="x/1", question="q", answer="a", images=[str(tmp_path / "a.png")], choices=["a", "b"]),
        Example(id="x/2", question="r", answer="b", images=[Image.new("RGB", (2, 2))]),
    ]
    with pytest.raises(DataError, match="image_dir"):
        examples_to_records(exs)
    recs = examples_to_records(exs[:1])
    assert json.loads(json.dumps(recs))[0]["choices"] == ["a", "b"]
    write_jsonl(exs, tmp_path / "out.jsonl", image_dir=tmp_path / "imgs")
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert lines[0]["image"] == ["a.png"] and lines[1]["image"] == ["imgs/x_2-0.png"]  # relative
    back = load_examples(tmp_path / "out.jsonl")
    assert [(e.id, e.answer, e.choices) for e in back] == [("x/1", "a", ["a", "b"]), ("x/2", "b", None)]
    assert back[1].images == [str(tmp_path / "imgs" / "x_2-0.png")]


def test_require_answer_false(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"question": "q"}, {"question": "r", "answer": 1}])
    assert [e.answer for e in load_examples(path, require_answer=False)] == ["", "1"]


# ----------------------------------------------------------------------------- errors


def test_missing_file_and_folder(tmp_path):
    (tmp_path / "blank.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no examples"):
        load_examples(tmp_path / "blank.jsonl")
    with pytest.raises(DataError, match="no such file"):
        load_examples(tmp_path / "nope.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="save_to_disk"):
        load_examples(tmp_path / "empty")


def test_hub_failure_is_explained(monkeypatch):
    def fail(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", fail)
    with pytest.raises(
        DataError, match=r"not a local file or folder, and loading it from the hub failed.*offline"
    ):
        load_examples("someone/some-dataset")


def test_hub_datasetdict_uses_split(monkeypatch):
    dd = datasets.DatasetDict({"test": datasets.Dataset.from_dict({"question": ["q"], "answer": ["a"]})})
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split=None: dd if split is None else dd[split])
    assert load_examples("someone/ds")[0].answer == "a"
    assert load_examples("someone/ds", split="test")[0].answer == "a"


@pytest.mark.parametrize("missing", ["question", "answer"])
def test_missing_required_column(tmp_path, missing):
    row = {"id": "1", "question": "q", "answer": "a", "other": 1}
    del row[missing]
    path = _jsonl(tmp_path / "d.jsonl", [row])
    with pytest.raises(DataError) as err:
        load_examples(path)
    msg = str(err.value)
    assert repr(missing) in msg and "d.jsonl" in msg and "'other'" in msg and f"ColumnMap({missing}=" in msg


def test_missing_custom_optional_column(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataError, match=r"'pics'.*ColumnMap"):
        load_examples(path, ColumnMap(image="pics"))


def test_empty_question_names_row(tmp_path):
    path = _jsonl(
        tmp_path / "d.jsonl",
        [{"id": "ok", "question": "q", "answer": 1}, {"id": "bad", "question": "  ", "answer": 1}],
    )
    with pytest.raises(DataError, match="row bad has an empty question"):
        load_examples(path)


@pytest.mark.parametrize("answer", [None, "", " "])
def test_missing_answer_names_row(tmp_path, answer):
    path = _jsonl(tmp_path / "d.jsonl", [{"id": "r7", "question": "q", "answer": answer}])
    with pytest.raises(DataError, match="row r7 has no answer"):
        load_examples(path)


def test_duplicate_ids(tmp_path):
    path = _jsonl(
        tmp_path / "d.jsonl",
        [{"id": 5, "question": "q", "answer": 1}, {"id": "5", "question": "r", "answer": 2}],
    )
    with pytest.raises(DataError, match="duplicate id '5'"):
        load_examples(path)


def test_missing_image_names_path_and_row(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"id": "v1", "question": "q", "answer": 1, "image": "gone.png"}])
    with pytest.raises(DataError, match=r"row v1: image file not found: gone\.png"):
        load_examples(path)


def test_bad_choices_and_split_on_file(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"id": "c1", "question": "q", "answer": 1, "choices": "a, b"}])
    with pytest.raises(DataError, match="row c1: choices"):
        load_examples(path)
    with pytest.raises(DataError, match="no splits"):
        load_examples(path, split="test")
