"""Examples I/O: read question/answer rows from local files, saved datasets or the hub.

Every source becomes a list of :class:`Example`. Problems in the data (missing columns, empty
questions or answers, duplicate ids, missing images) raise :class:`DataError` with a message that
names the row and the fix, because a silently wrong example poisons every label computed from it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = [
    "ColumnMap",
    "DataError",
    "Example",
    "examples_to_records",
    "load_examples",
    "write_jsonl",
]

JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet",)
FILE_SUFFIXES = JSON_SUFFIXES + CSV_SUFFIXES + PARQUET_SUFFIXES
FOLDER_EXAMPLES_FILE = "examples.jsonl"


class DataError(ValueError):
    """Raised when examples cannot be read faithfully from a source."""


@dataclass
class ColumnMap:
    """Which source columns hold each Example field (rename here instead of editing the data)."""

    question: str = "question"
    """Column with the question text (required)."""
    answer: str = "answer"
    """Column with the gold answer (required unless ``require_answer=False``)."""
    image: str | None = "image"
    """Optional column with image(s): a path, a list of paths, a PIL image or a datasets Image cell."""
    id: str | None = "id"
    """Optional id column; when absent the row index (as a string) is the id."""
    choices: str | None = "choices"
    """Optional column with answer choices: a list or a JSON string of a list."""


@dataclass
class Example:
    """One question with its gold answer, the unit every stage of the relay works on."""

    id: str
    """Unique, stable identifier (row index as a string when the source has no id column)."""
    question: str
    """The question text, never empty."""
    answer: str
    """Gold answer as a string; "" only when loaded with ``require_answer=False``."""
    images: list = field(default_factory=list)
    """Images: file paths (str, resolved) or PIL images."""
    choices: list[str] | None = None
    """Answer choices for multiple-choice questions, else None."""


# --------------------------------------------------------------------------- reading sources


@dataclass
class _Table:
    """Rows of one source plus what is needed to interpret them."""

    columns: list[str]
    """Column names available in the source."""
    rows: Iterable[dict[str, Any]]
    """Row dicts, in source order (already cut to ``limit``)."""
    base_dir: Path
    """Folder against which relative image paths resolve."""
    name: str
    """Human-readable source name for error messages."""


def _read_json_rows(path: Path) -> list[dict[str, Any]]:
    """Read JSON lines, a JSON list of objects, or a JSON object of equal-length columns."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    rows: Any
    if path.suffix == ".json" and stripped[:1] in ("[", "{"):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError:
            rows = None  # maybe JSON lines saved as .json
        if isinstance(rows, dict):
            lists = {k: v for k, v in rows.items() if isinstance(v, list)}
            if len(lists) == 1 and all(isinstance(r, dict) for r in next(iter(lists.values()))):
                rows = next(iter(lists.values()))  # {"data": [...]}
            elif lists and len(lists) == len(rows) and len({len(v) for v in lists.values()}) == 1:
                n = len(next(iter(lists.values())))
                rows = [{k: v[i] for k, v in rows.items()} for i in range(n)]  # columnar
            else:
                raise DataError(
                    f"{path}: a JSON object must hold one list of row objects or equal-length columns"
                )
        if rows is not None:
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise DataError(f"{path}: expected a JSON list of objects (one per example)")
            return rows
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}, line {lineno}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}, line {lineno}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def _read_csv_rows(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Read CSV as exact strings: type inference would turn answer "007" into 7."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _columns_of(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Union of keys over rows, in first-seen order."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _pick_split(dd: Any, split: str | None, name: str) -> Any:
    """Choose one split of a DatasetDict: the asked one, else "train", else the only one."""
    splits = list(dd.keys())
    if split is None:
        if "train" in dd:
            return dd["train"]
        if len(splits) == 1:
            return dd[splits[0]]
        raise DataError(f"{name} has several splits {splits} and none is 'train'; pass split=...")
    if split not in dd:
        raise DataError(f"split {split!r} not found in {name}; available splits: {splits}")
    return dd[split]


def _undecoded_images(ds: Any, column: str | None) -> Any:
    """Keep datasets Image cells as {bytes, path} so files on disk stay paths, not decoded copies."""
    import datasets

    if not column or column not in ds.column_names:
        return ds
    feat = ds.features[column]
    if isinstance(feat, datasets.Image) and feat.decode:
        return ds.cast_column(column, datasets.Image(decode=False))
    inner = getattr(feat, "feature", None)
    if isinstance(feat, (datasets.List, datasets.Sequence)) and isinstance(inner, datasets.Image):
        return ds.cast_column(column, datasets.List(datasets.Image(decode=False)))
    return ds


def _dataset_table(ds: Any, limit: int | None, base_dir: Path, name: str, image_col: str | None) -> _Table:
    """Wrap a ``datasets.Dataset`` (cut to ``limit`` before any row is read)."""
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    ds = _undecoded_images(ds, image_col)
    return _Table(list(ds.column_names), ds, base_dir, name)


def _looks_like_path(source: str) -> bool:
    """True when a missing source was clearly meant as a local path, not a hub id."""
    return (
        source.lower().endswith(FILE_SUFFIXES)
        or os.path.isabs(source)
        or source.startswith((".", "~"))
        or "\\" in source
        or source.count("/") > 1
    )


def _open_source(source: str | os.PathLike, split: str | None, limit: int | None, image_col: str | None):
    """Dispatch on what ``source`` is: file, saved dataset folder, or hub id."""
    path = Path(source).expanduser()
    name = str(source)
    if path.is_file():
        suffix = path.suffix.lower()
        if split not in (None, "train"):
            raise DataError(f"{name} is a single file with no splits; split={split!r} cannot apply")
        base = path.resolve().parent
        if suffix in JSON_SUFFIXES:
            rows = _read_json_rows(path)
            if not rows:
                raise DataError(f"{name}: the file holds no examples")
            columns = _columns_of(rows)  # before the limit: a column may start late
            return _Table(columns, rows[:limit] if limit is not None else rows, base, name)
        if suffix in CSV_SUFFIXES:
            cols, rows = _read_csv_rows(path)
            rows = rows[:limit] if limit is not None else rows
            return _Table(cols, rows, base, name)
        if suffix in PARQUET_SUFFIXES:
            import datasets

            ds = datasets.Dataset.from_parquet(str(path))
            return _dataset_table(ds, limit, base, name, image_col)
        raise DataError(f"{name}: unsupported file type {suffix!r}; expected one of {list(FILE_SUFFIXES)}")
    if path.is_dir():
        if not (path / "dataset_info.json").exists() and not (path / "dataset_dict.json").exists():
            if (path / FOLDER_EXAMPLES_FILE).is_file():
                return _open_source(path / FOLDER_EXAMPLES_FILE, split, limit, image_col)
            raise DataError(
                f"{name} is a folder but neither a datasets save_to_disk folder nor one holding "
                f"{FOLDER_EXAMPLES_FILE}"
            )
        import datasets

        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as err:  # corrupt or foreign folder
            raise DataError(f"{name}: could not load the saved dataset ({err})") from err
        if isinstance(ds, datasets.DatasetDict):
            ds = _pick_split(ds, split, name)
        return _dataset_table(ds, limit, path.resolve(), name, image_col)
    if _looks_like_path(name):
        raise DataError(f"{name}: no such file or folder")
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as err:
        raise DataError(
            f"{name!r} is not a local file or folder, and loading it from the hub failed: "
            f"{type(err).__name__}: {err}"
        ) from err
    if isinstance(ds, datasets.DatasetDict):
        ds = _pick_split(ds, split, name)
    return _dataset_table(ds, limit, Path.cwd(), name, image_col)


# --------------------------------------------------------------------------- cell conversion


def _is_missing(value: Any) -> bool:
    """None, NaN, or a blank string."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _scalar_to_str(value: Any, what: str, row_id: str) -> str:
    """Cast a scalar cell to str; integral floats lose the ".0" (3.0 -> "3"), strings are kept."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict)):  # numpy scalar
        return _scalar_to_str(value.item(), what, row_id)
    raise DataError(f"row {row_id}: {what} must be a single value, got {type(value).__name__}: {value!r:.80}")


def _resolve_image(item: Any, base_dir: Path, row_id: str) -> Any:
    """One image cell item -> existing file path (str) or PIL image."""
    if isinstance(item, os.PathLike):
        item = os.fspath(item)
    if isinstance(item, str):
        p = Path(item).expanduser()
        if not p.is_absolute():
            p = base_dir / p
        if not p.is_file():
            raise DataError(f"row {row_id}: image file not found: {item} (looked at {p})")
        return str(p)
    if isinstance(item, dict) and ("bytes" in item or "path" in item):
        path, data = item.get("path"), item.get("bytes")
        if path:
            p = Path(path).expanduser()
            p = p if p.is_absolute() else base_dir / p
            if p.is_file():
                return str(p)
        if data:
            from PIL import Image

            img = Image.open(io.BytesIO(data))
            img.load()
            return img
        raise DataError(f"row {row_id}: image file not found: {path} (and no image bytes stored)")
    if hasattr(item, "size") and hasattr(item, "mode") and hasattr(item, "save"):  # PIL image
        return item
    raise DataError(f"row {row_id}: unsupported image cell of type {type(item).__name__}")


def _parse_images(cell: Any, base_dir: Path, row_id: str) -> list:
    """Image cell (None, path, list of paths, PIL image, datasets Image dict) -> list of images."""
    if _is_missing(cell):
        return []
    items = cell if isinstance(cell, (list, tuple)) else [cell]
    return [_resolve_image(item, base_dir, row_id) for item in items if not _is_missing(item)]


def _parse_choices(cell: Any, row_id: str) -> list[str] | None:
    """Choices cell (list, JSON string of a list, or empty) -> list of strings or None."""
    if _is_missing(cell):
        return None
    if isinstance(cell, str):
        try:
            cell = json.loads(cell)
        except json.JSONDecodeError:
            raise DataError(
                f"row {row_id}: choices must be a list or a JSON list, got {cell!r:.80}"
            ) from None
    if hasattr(cell, "tolist"):
        cell = cell.tolist()
    if not isinstance(cell, (list, tuple)):
        raise DataError(f"row {row_id}: choices must be a list, got {type(cell).__name__}")
    return [_scalar_to_str(c, "each choice", row_id) for c in cell]


def _optional_column(cols: ColumnMap, name: str, available: list[str], source: str) -> str | None:
    """Resolve an optional column: absent default -> None, absent custom name -> error."""
    column = getattr(cols, name)
    if column is None or column in available:
        return column
    default = next(f.default for f in fields(ColumnMap) if f.name == name)
    if column == default:
        return None
    raise DataError(
        f"{name} column {column!r} not found in {source}; available columns: {available}. "
        f"Name the right column with --columns.{name} COLUMN, or --columns.{name} null to go without "
        f"(in Python: ColumnMap({name}=...))."
    )


def _required_column(column: str, what: str, available: list[str], source: str) -> None:
    """Fail with the column, the source, the available columns and the ColumnMap hint."""
    if column not in available:
        raise DataError(
            f"{what} column {column!r} not found in {source}; available columns: {available}. "
            f"Name your column with --columns.{what} COLUMN (in Python: ColumnMap({what}='COLUMN'))."
        )


def _iter_examples(table: _Table, cols: ColumnMap, require_answer: bool) -> Iterator[Example]:
    """Turn rows into validated Examples."""
    available = table.columns
    _required_column(cols.question, "question", available, table.name)
    has_answer = cols.answer in available
    if require_answer:
        _required_column(cols.answer, "answer", available, table.name)
    id_col = _optional_column(cols, "id", available, table.name)
    image_col = _optional_column(cols, "image", available, table.name)
    choices_col = _optional_column(cols, "choices", available, table.name)
    seen: dict[str, int] = {}
    for index, row in enumerate(table.rows):
        if id_col is not None:
            raw_id = row.get(id_col)
            if _is_missing(raw_id):
                raise DataError(f"{table.name}: row {index} has an empty {id_col!r} (id) value")
            row_id = _scalar_to_str(raw_id, "id", str(index))
        else:
            row_id = str(index)
        if row_id in seen:
            raise DataError(f"{table.name}: duplicate id {row_id!r} (rows {seen[row_id]} and {index})")
        seen[row_id] = index
        question = row.get(cols.question)
        if _is_missing(question):
            raise DataError(f"{table.name}: row {row_id} has an empty question ({cols.question!r})")
        raw_answer = row.get(cols.answer) if has_answer else None
        if _is_missing(raw_answer):
            if require_answer:
                raise DataError(
                    f"{table.name}: row {row_id} has no answer ({cols.answer!r}); this command needs a gold "
                    "answer in every row (--columns.answer names its column; in Python, "
                    "require_answer=False allows rows without one)"
                )
            answer = ""
        else:
            answer = _scalar_to_str(raw_answer, "answer", row_id)
        images = _parse_images(row.get(image_col), table.base_dir, row_id) if image_col else []
        choices = _parse_choices(row.get(choices_col), row_id) if choices_col else None
        yield Example(
            id=row_id,
            question=_scalar_to_str(question, "question", row_id),
            answer=answer,
            images=images,
            choices=choices,
        )


def load_examples(
    source: str | os.PathLike,
    columns: ColumnMap | None = None,
    *,
    split: str | None = None,
    limit: int | None = None,
    require_answer: bool = True,
) -> list[Example]:
    """Load examples from a .jsonl/.json/.csv/.parquet file, a save_to_disk folder, or a hub id.

    A DatasetDict folder (or hub dataset) uses ``split``: "train" by default, else its only split.
    A plain folder holding ``examples.jsonl`` (as ``scripts.prepare_data`` writes) loads that file.
    ``limit`` keeps the first N rows. Relative image paths resolve against the data file's folder.
    """
    cols = columns or ColumnMap()
    if limit is not None and limit < 0:
        raise DataError(f"limit must be >= 0, got {limit}")
    table = _open_source(source, split, limit, cols.image)
    return list(_iter_examples(table, cols, require_answer))


# --------------------------------------------------------------------------- writing


def _safe_name(text: str) -> str:
    """A file-name-safe version of an id."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"


def examples_to_records(
    examples: Iterable[Example], image_dir: str | os.PathLike | None = None
) -> list[dict[str, Any]]:
    """JSON-able dicts with the default column names, so ``load_examples`` reads them back.

    PIL images are saved as PNG into ``image_dir`` (required when any example holds one); file
    paths are kept as they are.
    """
    records = []
    for ex in examples:
        paths = []
        for k, img in enumerate(ex.images):
            if isinstance(img, (str, os.PathLike)):
                paths.append(os.fspath(img))
                continue
            if image_dir is None:
                raise DataError(
                    f"example {ex.id} holds an in-memory image; pass image_dir=... to save it as PNG"
                )
            out = Path(image_dir)
            out.mkdir(parents=True, exist_ok=True)
            target = out / f"{_safe_name(ex.id)}-{k}.png"
            img.save(target, format="PNG")
            paths.append(str(target))
        records.append(
            {"id": ex.id, "question": ex.question, "answer": ex.answer, "image": paths, "choices": ex.choices}
        )
    return records


def write_jsonl(
    examples: Iterable[Example], path: str | os.PathLike, image_dir: str | os.PathLike | None = None
) -> None:
    """Write examples as JSON lines; image paths under the file's folder are stored relative to it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.resolve().parent
    records = examples_to_records(examples, image_dir=image_dir)
    with path.open("w", encoding="utf-8") as fh:
        for rec in records:
            rel = []
            for p in rec["image"]:
                full = Path(p).resolve()
                rel.append(full.relative_to(base).as_posix() if full.is_relative_to(base) else str(full))
            rec["image"] = rel
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
