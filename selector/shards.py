"""Resumable output: records written as Parquet shards, each atomically, keyed by a unique id.

A long job (reasoning, labeling) writes a shard after every batch; killed and re-run, it reads the
ids already written and skips them, so nothing written is lost and nothing is duplicated.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .cmdline import UsageError

__all__ = [
    "OutputLock",
    "OutputLockedError",
    "ShardWriter",
    "read_jsonl_output",
    "read_records",
    "shard_files",
]


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
        tmp = self.out_dir / f".{name}.tmp"
        pq.write_table(pa.Table.from_pylist(fresh), tmp)
        os.replace(tmp, self.out_dir / name)  # atomic: a shard is whole or absent
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
    """All shards of a folder as one ``datasets.Dataset``, first record kept per id."""
    import datasets

    files = shard_files(out_dir)
    if not files:
        raise FileNotFoundError(f"no shards (shard-*.parquet) in {str(out_dir)!r}")
    tables = [pq.read_table(f) for f in files]
    table = pa.concat_tables(tables, promote_options="permissive")
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
    return datasets.Dataset(table)
