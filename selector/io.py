"""Atomic file writes: a reader (or a resumed job) sees the old file or the new one, never half of one;
and a fingerprint of files, for caches that must notice when a model folder changes.

Every output a job may be killed while writing (results, summaries, shards, cached tensors) goes through
``atomic_path``: the bytes land in a hidden temporary file beside the target, moved over it in one
``os.replace`` once whole.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "files_fingerprint", "write_json_atomic", "write_text_atomic"]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path (``.NAME.tmp`` beside ``path``, so globs for NAME's pattern skip it) to write
    in the block; moved onto ``path`` when the block ends, removed if it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any, **dump_kwargs) -> Path:
    """Write ``obj`` as JSON (``json.dumps`` keywords; ``indent=2`` unless given) plus a newline, atomically."""
    dump_kwargs.setdefault("indent", 2)
    return write_text_atomic(path, json.dumps(obj, **dump_kwargs) + "\n")


def files_fingerprint(folder: Path, patterns: Sequence[str], content: bool = False) -> str:
    """A hash of the files in ``folder`` matching ``patterns``: names, sizes and mtimes (and bytes with ``content``)."""
    h = hashlib.sha256()
    for pattern in patterns:
        for path in sorted(folder.glob(pattern)):
            if path.is_file():
                stat = path.stat()
                h.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
                if content:
                    h.update(path.read_bytes())
    return h.hexdigest()[:16]
