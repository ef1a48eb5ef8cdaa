"""Resumable output: records written as Parquet shards, each atomically, keyed by a unique id.

A long job (reasoning, labeling) writes a shard after every batch; killed and re-run, it reads the
ids already written and skips them, so nothing written is lost and nothing is duplicated.

Per-token vectors (``ARRAY_COLUMNS``: the small model's hidden states) are stored as float32
``datasets.Array2D`` columns and read back as numpy arrays: as float64 nested lists (traces written
before issue 15, still read: cast on load) they took twice the bytes and loaded as slow Python lists.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .cmdline import UsageError
from .io import atomic_path

__all__ = [
    "ARRAY_COLUMNS",
    "OutputLock",
    "OutputLockedError",
    "ShardWriter",
    "read_jsonl_output",
    "read_records",
    "records_table",
    "shard_files",
]

ARRAY_COLUMNS = ("hidden_states",)
"""Record fields holding one float vector per token: stored as float32 ``datasets.Array2D((None, width))``."""


class OutputLockedError(UsageError, RuntimeError):
    """Another job holds the lock on an output: an expected refusal, printed as one line."""


class OutputLock:
    """An exclusive lock on one output (file or folder), held by a job while it writes there.

    The lock is an advisory ``flock`` on a hidden file beside the output (``.NAME.lock``), so the
    output itself holds only what the job writes; the kernel releases it when its holder exits, even
    killed, and the file is removed on a clean release. A second job asking for it fails at once with
    one line naming the output. Not POSIX (no ``fcntl``): no lock.
    """

    def __init__(self, path: str | os.PathLike, what: str = "output"):
        self.path = Path(path)
        self.lock_path = self.path.parent / f".{self.path.name}.lock"
        self.what = what
        self._handle = None
        try:
            import fcntl
        except ImportError:
            return
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            handle = self.lock_path.open("a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                raise OutputLockedError(
                    f"another job is already writing {what} {str(self.path)!r}; wait for it or stop it first "
                    "(to resume, run the same command again once it has stopped)"
                ) from None
            try:  # the holder before us may have removed the file between our open and our flock
                same = os.stat(self.lock_path).st_ino == os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._handle = handle
                return
            handle.close()

    def release(self) -> None:
        if self._handle is not None:
            self.lock_path.unlink(missing_ok=True)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def shard_files(out_dir: str | os.PathLike) -> list[Path]:
    """The finished shards in a folder, in write order."""
    return sorted(Path(out_dir).glob("shard-*.parquet"))


class ShardWriter:
    """Appends records to ``out_dir`` as atomic Parquet shards; knows which ids are done."""

    def __init__(self, out_dir: str | os.PathLike, key: str = "id", tag: str = "r0", exclusive: bool = False):
        """``exclusive``: hold a lock on (folder, tag) while this writer lives, so a second job started
        on the same folder fails at once instead of redoing the first one's work beside it (each
        would label the same records: neither sees the other's shards until they land)."""
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.key = key
        self.tag = tag
        self._lock = _lock_folder(self.out_dir, tag) if exclusive else None
        self.done: set[str] = set()
        for path in shard_files(self.out_dir):
            self.done.update(str(v) for v in pq.read_table(path, columns=[key]).column(key).to_pylist())

    def close(self) -> None:
        """Release the folder lock (``exclusive``); the written shards stay as they are."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def write(self, records: Iterable[dict]) -> Path | None:
        """Write one shard; records whose id is already done are dropped (never duplicated)."""
        fresh = [r for r in records if str(r[self.key]) not in self.done]
        if not fresh:
            return None
        index = len(shard_files(self.out_dir))
        name = f"shard-{index:06d}-{self.tag}-{uuid.uuid4().hex[:8]}.parquet"
        with atomic_path(self.out_dir / name) as tmp:  # a shard is whole or absent
            pq.write_table(records_table(fresh), tmp)
        self.done.update(str(r[self.key]) for r in fresh)
        return self.out_dir / name


def _lock_folder(out_dir: Path, tag: str):
    """An exclusive advisory lock on ``out_dir/.lock-{tag}``, released when its holder exits (even killed)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        return None
    handle = (out_dir / f".lock-{tag}").open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise OutputLockedError(
            f"another job is already writing to {str(out_dir)!r} (writer {tag}); wait for it or stop it "
            "first: both would redo the same records. Resuming needs no second job: re-run the command "
            "once the first has stopped."
        ) from None
    return handle


def read_jsonl_output(path: str | os.PathLike) -> list[dict]:
    """The records of a JSONL output a job appends to, ready for the job to append again.

    A last line without its newline is a write cut short by a kill: it is dropped with a warning naming
    the file and line, and cut from the file so the next append starts on a clean line. Any other line
    that is not a JSON object is an error naming the file and line (it was not written by a kill).
    """
    import json

    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline
    if torn.strip():
        warnings.warn(
            f"{path}: dropped the unfinished last line {len(lines) + 1} (a write cut short when the job was "
            "stopped); its record will be redone",
            stacklevel=2,
        )
        with path.open("r+b") as f:
            f.truncate(len(data) - len(torn))
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(
                f"{path}, line {number}: not valid JSON ({getattr(err, 'msg', err)}); fix or delete that line"
            ) from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


def read_records(out_dir: str | os.PathLike, key: str = "id"):
    """All shards of a folder as one ``datasets.Dataset``, first record kept per id.

    ``ARRAY_COLUMNS`` come back as float32 numpy arrays (the Dataset's format for those columns; the
    others stay Python objects), older float64-list shards cast on load; a column that cannot be
    read so is an error naming the folder.
    """
    import datasets  # registers the Array2D extension type, so Parquet reads it back as such

    files = shard_files(out_dir)
    if not files:
        raise FileNotFoundError(f"no shards (shard-*.parquet) in {str(out_dir)!r}")
    try:
        tables = [with_float32_arrays(pq.read_table(f)) for f in files]
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowException, ValueError) as err:
        raise ValueError(f"{str(out_dir)!r}: the shards' per-token arrays cannot be read: {err}") from None
    ids = [str(v) for v in table.column(key).to_pylist()]
    seen: set[str] = set()
    keep = []
    for i, v in enumerate(ids):
        if v not in seen:
            seen.add(v)
            keep.append(i)
    if len(keep) < len(ids):
        warnings.warn(
            f"{len(ids) - len(keep)} duplicate ids in {out_dir}: kept the first of each", stacklevel=2
        )
        table = table.take(keep)
    dataset = datasets.Dataset(table)
    arrays = [c for c in ARRAY_COLUMNS if c in table.column_names and _is_array2d(table.schema.field(c).type)]
    return dataset.with_format("numpy", columns=arrays, output_all_columns=True) if arrays else dataset


def records_table(records: list[dict]) -> pa.Table:
    """Records as an Arrow table (columns as the first record names them), ``ARRAY_COLUMNS`` as float32 Array2D."""
    arrays = [c for c in ARRAY_COLUMNS if any(r.get(c) is not None for r in records)]
    if not arrays:
        return pa.Table.from_pylist(records)
    table = pa.Table.from_pylist([{k: v for k, v in r.items() if k not in arrays} for r in records])
    for name in arrays:
        table = table.append_column(name, float32_rows([r.get(name) for r in records]))
    order = [k for k in records[0] if k in table.column_names]
    return table.select(order + [c for c in table.column_names if c not in order])


def float32_rows(values: list) -> pa.ExtensionArray:
    """One 2-D float array per record (numpy, torch or nested lists; None kept) as a float32 Array2D column.

    Every row must have one width: they are one model's states at one layer."""
    mats = [None if v is None else _matrix(v) for v in values]
    widths = {m.shape[1] for m in mats if m is not None and m.ndim == 2 and len(m)}
    if len(widths) > 1 or any(m is not None and m.size and m.ndim != 2 for m in mats):
        raise ValueError(f"per-token arrays must be 2-D with one width; got widths {sorted(widths)}")
    width = widths.pop() if widths else 0
    mats = [m if m is None or m.size else np.empty((0, width), np.float32) for m in mats]
    rows = np.cumsum([0] + [0 if m is None else len(m) for m in mats], dtype=np.int32)
    flat = np.concatenate([m.reshape(-1) for m in mats if m is not None] or [np.empty(0, np.float32)])
    inner = pa.ListArray.from_arrays(np.arange(rows[-1] + 1, dtype=np.int32) * width, pa.array(flat))
    mask = pa.array([m is None for m in mats]) if any(m is None for m in mats) else None
    return _array2d(pa.ListArray.from_arrays(pa.array(rows), inner, mask=mask))


def with_float32_arrays(table: pa.Table) -> pa.Table:
    """``table`` with its ``ARRAY_COLUMNS`` as float32 Array2D (float64 nested lists, as traces were
    written before issue 15, are cast); raises ValueError for a column that is not per-token vectors."""
    for name in ARRAY_COLUMNS:
        if name not in table.column_names or _is_array2d(table.schema.field(name).type):
            continue
        column = table.column(name).combine_chunks()
        if pa.types.is_null(column.type):
            continue
        if isinstance(column, pa.ExtensionArray):
            column = column.storage
        try:
            storage = pc.cast(column, pa.list_(pa.list_(pa.float32())))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            raise ValueError(f"column {name!r} holds {column.type}, not per-token float vectors") from None
        table = table.set_column(table.column_names.index(name), name, _array2d(storage))
    return table


def _matrix(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor (any dtype, any device)
        value = value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def _array2d(storage: pa.Array) -> pa.ExtensionArray:
    """list<list<float32>> storage as a ``datasets.Array2D((None, width), "float32")`` column."""
    import datasets

    widths = pc.unique(pc.list_value_length(storage.flatten())).to_pylist()
    if len(widths) > 1:
        raise ValueError(f"per-token vectors of different widths {sorted(widths)} in one column")
    kind = datasets.Array2D(shape=(None, widths[0] if widths else 0), dtype="float32")()
    return pa.ExtensionArray.from_storage(kind, storage)


def _is_array2d(kind: pa.DataType) -> bool:
    return (
        isinstance(kind, pa.ExtensionType)
        and getattr(kind, "value_type", None) == "float32"
        and (len(getattr(kind, "shape", ())) == 2)
    )
