"""Labelled traces for selector training: read, turn into reasoning views, split by id, batch.

A labelled trace (``tokenrelay label`` output, contract in DESIGN.md) is a trace record plus unit
offsets, per-unit labels, per-unit large-model token counts and f(all) / f(∅). Each becomes a
``LabelledTrace``: a ``ReasoningView`` (token spans recovered with the small model's tokenizer) with
its labels. Traces vary in unit count; batches are ``TraceBatch`` lists, padded later by the selector's ``collate``
(the LightningModule does that, so features match exactly what inference computes).

Traces whose labels are all equal carry no ranking signal: they are skipped and counted.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, RandomSampler

from selector.data import DataError
from selector.progress import progress_bar
from selector.reasoning import ReasoningView, view_from_trace

__all__ = [
    "LabelledTrace",
    "TraceBatch",
    "TraceDataModule",
    "load_labelled",
    "load_sources",
    "split_of",
    "task_of",
]

LABEL_FIELDS = ("labels", "unit_starts", "unit_ends")


@dataclass
class LabelledTrace:
    """One training example: the view a selector scores and what the labels say about its units."""

    id: str
    view: ReasoningView
    labels: list[float]
    token_counts: list[int]
    """Large-model tokens per unit (budgets count these)."""
    f_all: float | None = None
    f_none: float | None = None


def load_labelled(source: str):
    """Labelled traces as a ``datasets.Dataset``: a shard folder, a save_to_disk folder, or a JSONL/Parquet file."""
    import datasets

    from selector.shards import read_records, shard_files

    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"labelled traces {source!r} do not exist")
    if path.is_dir():
        if shard_files(path):
            return read_records(path)
        if (path / "dataset_info.json").exists() or (path / "state.json").exists():
            return datasets.load_from_disk(str(path))
        raise FileNotFoundError(f"{source!r} holds no shard-*.parquet files and no saved dataset")
    kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(path.suffix)
    if kind is None:
        raise DataError(f"{source!r}: expected a .jsonl / .json / .parquet file or a folder")
    return datasets.load_dataset(kind, data_files=str(path), split="train")


def _unified_features(parts):
    """The first part's features, with each column that is all-null there (Arrow type ``null``: e.g.
    label_reliability in a folder where no trace drew the reference labeler) typed by a part that has
    values in it."""
    import datasets

    merged = dict(parts[0].features)
    for name, feature in merged.items():
        if "null" in str(feature):
            typed = [p.features[name] for p in parts[1:] if "null" not in str(p.features[name])]
            if typed:
                merged[name] = typed[0]
    return datasets.Features(merged)


def load_sources(sources: str | Sequence[str]):
    """One or several labelled-trace sources as one ``datasets.Dataset`` (a mixture of tasks)."""
    import datasets

    if isinstance(sources, (str, Path)):
        return load_labelled(str(sources))
    if not sources:
        raise DataError("data: no labelled-trace source given")
    parts = [load_labelled(str(s)) for s in sources]
    first = parts[0]
    for source, part in zip(sources[1:], parts[1:]):
        if set(part.column_names) != set(first.column_names):
            raise DataError(
                f"{source!r} and {sources[0]!r} have different columns "
                f"({sorted(set(part.column_names) ^ set(first.column_names))}): label them with one job config"
            )
    features = _unified_features(parts)
    try:
        merged = datasets.concatenate_datasets(
            [p if p.features == features else p.cast(features) for p in parts]
        )
    except (ValueError, TypeError) as err:
        raise DataError(f"labelled-trace sources {list(sources)} do not fit together: {err}") from None
    ids = merged["id"] if "id" in merged.column_names else []
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:3]
        raise DataError(f"trace ids repeat across the data sources (e.g. {dup}): each trace once")
    return merged


def task_of(trace_id: str) -> str | None:
    """The task (setting) of a ``{task}-{seed}-{index}`` id, as scripts/prepare_data writes them; None else."""
    head, _, rest = str(trace_id).rpartition("-")
    task, _, seed = head.rpartition("-")
    return task if task and seed.isdigit() and rest.isdigit() else None


def split_of(trace_id: str, val_fraction: float, seed: int = 0) -> str:
    """'val' or 'train', stable per id (a trace keeps its split when the data set grows)."""
    return "val" if _unit_hash(trace_id, seed) < val_fraction else "train"


def _unit_hash(trace_id: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{trace_id}".encode()).hexdigest()
    return int(digest[:12], 16) / 16**12


class TraceDataModule(L.LightningDataModule):
    """Labelled traces split by id into train / val, batched as lists of ``LabelledTrace``."""

    def __init__(
        self,
        data: str | list[str],
        small_model: str | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        batch_size: int = 8,
        num_workers: int = 0,
        min_units: int = 2,
        limit: int | None = None,
    ):
        """
        Args:
            data: Labelled traces: a `tokenrelay label` output folder, a save_to_disk folder, or a JSONL/Parquet
                file; or a list of them (a mixture of tasks; trace ids must not repeat).
            small_model: The small model whose tokenizer cuts token spans (null: the traces' `model` field).
            val_fraction: Share of trace ids held out for validation (at least one trace is).
            split_seed: Seed of the id hash that splits train / val.
            batch_size: Traces per batch.
            num_workers: DataLoader worker processes.
            min_units: Traces with fewer units are skipped (no ranking to learn).
            limit: Use only the first N records.
        """
        super().__init__()
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        if batch_size < 1 or min_units < 2:
            raise ValueError("need batch_size >= 1 and min_units >= 2")
        self.data = data
        self.small_model = small_model
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.min_units = min_units
        self.limit = limit
        self.train_items: list[LabelledTrace] | None = None
        self.val_items: list[LabelledTrace] = []
        self.stats: dict = {}
        self.info: dict = {}
        self.shuffle_seed = torch.initial_seed() % 2**31
        """Seed of the training order (with the epoch); saved in resume checkpoints."""

    # ------------------------------------------------------------------ loading
    def _small_tokenizer(self, records):
        from transformers import AutoTokenizer

        name = self.small_model or (records[0].get("model") if len(records) else None)
        if name is None:
            return None
        try:
            return AutoTokenizer.from_pretrained(name)
        except OSError as err:
            if self.small_model is not None:
                raise FileNotFoundError(
                    f"could not load the small model's tokenizer {name!r}: {err}"
                ) from err
            warnings.warn(
                f"the traces name small model {name!r} but its tokenizer cannot be loaded here; "
                "set data.small_model: views get no token spans (the hidden backbone needs them)",
                stacklevel=2,
            )
            return None

    def setup(self, stage: str | None = None) -> None:
        if self.train_items is not None:
            return
        records = load_sources(self.data)
        if self.limit is not None:
            records = records.select(range(min(self.limit, len(records))))
        if len(records) == 0:
            raise DataError(f"{self.data!r} holds no records")
        missing = [f for f in LABEL_FIELDS if f not in records.column_names]
        if missing:
            raise DataError(
                f"{self.data!r} is not labelled (no {missing}): run `tokenrelay label` on the traces first"
            )
        tokenizer = self._small_tokenizer(records)
        stats = {"records": len(records), "skipped_constant_labels": 0, "skipped_few_units": 0}
        granularities, methods, labelers, hidden_sizes = set(), set(), set(), set()
        train, val = [], []
        with progress_bar() as bar:
            task = bar.add_task("reading labelled traces", total=len(records))
            for record in records:
                bar.advance(task)
                item = self._item(record, tokenizer, stats)
                if item is None:
                    continue
                granularities.add(record.get("granularity"))
                methods.add(record.get("label_method"))
                labelers.add(record.get("labeler_model"))
                if item.view.hidden_states is not None:
                    hidden_sizes.add(int(item.view.hidden_states.shape[-1]))
                (val if split_of(item.id, self.val_fraction, self.split_seed) == "val" else train).append(
                    item
                )
        if not val and len(train) > 1:  # tiny data sets: hold out the trace with the smallest hash
            pick = min(range(len(train)), key=lambda k: _unit_hash(train[k].id, self.split_seed))
            val.append(train.pop(pick))
        if not train:
            raise DataError(
                f"{self.data!r}: no trace left to train on ({stats['skipped_constant_labels']} with all-equal "
                f"labels, {stats['skipped_few_units']} with fewer than {self.min_units} units)"
            )
        if len(hidden_sizes) > 1:
            raise DataError(
                f"{self.data!r}: traces carry hidden states of different widths {sorted(hidden_sizes)}"
            )
        skipped = stats["skipped_constant_labels"] + stats["skipped_few_units"]
        if skipped:
            warnings.warn(
                f"skipped {skipped} of {len(records)} labelled traces with no ranking signal "
                f"({stats['skipped_constant_labels']} all-equal labels, {stats['skipped_few_units']} "
                f"with fewer than {self.min_units} units)",
                stacklevel=2,
            )
        stats.update(train=len(train), val=len(val), skipped=skipped)
        self.stats = stats
        self.info = {
            "data": str(self.data) if isinstance(self.data, str) else [str(d) for d in self.data],
            "tasks": dict(sorted(Counter(t for t in map(task_of, records["id"]) if t).items()))
            if "id" in records.column_names
            else None,
            "granularity": _single(granularities),
            "label_method": _single(methods),
            "labeler_model": _single(labelers),
            "small_model": self.small_model
            or _single({r for r in records["model"]} if "model" in records.column_names else set()),
            "hidden_size": hidden_sizes.pop() if hidden_sizes else None,
            "small_vocab_size": len(tokenizer) if tokenizer is not None else None,
        }
        self.train_items, self.val_items = train, val

    def _item(self, record: dict, tokenizer, stats: dict) -> LabelledTrace | None:
        labels = record.get("labels")
        if labels is None:
            raise DataError(f"trace {record.get('id')!r} has no labels")
        labels = [float(x) for x in labels]
        if any(not math.isfinite(x) for x in labels):
            raise DataError(f"trace {record.get('id')!r} has a non-finite label")
        if len(labels) < self.min_units:
            stats["skipped_few_units"] += 1
            return None
        if max(labels) - min(labels) <= 1e-12:
            stats["skipped_constant_labels"] += 1
            return None
        view = view_from_trace(record, tokenizer=tokenizer, with_labels=True)
        counts = record.get("unit_token_counts") or [1] * len(labels)
        if len(counts) != len(labels):
            raise DataError(
                f"trace {record['id']!r}: {len(counts)} unit_token_counts for {len(labels)} labels"
            )
        return LabelledTrace(
            id=str(record["id"]),
            view=view,
            labels=labels,
            token_counts=[int(c) for c in counts],
            f_all=_float(record.get("f_all")),
            f_none=_float(record.get("f_none")),
        )

    # ------------------------------------------------------------------ loaders
    def _loader(self, items: list[LabelledTrace], shuffle: bool) -> DataLoader:
        # the loader draws from its own generator, never the global RNG (dropout's): a resumed run
        # then consumes random numbers exactly as an uninterrupted one
        return DataLoader(
            items,
            batch_size=self.batch_size,
            sampler=EpochShuffle(items, self.shuffle_seed) if shuffle else None,
            num_workers=self.num_workers,
            collate_fn=as_batch,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.shuffle_seed),
        )

    def state_dict(self) -> dict:
        return {"shuffle_seed": self.shuffle_seed}

    def load_state_dict(self, state_dict: dict) -> None:
        self.shuffle_seed = int(state_dict.get("shuffle_seed", self.shuffle_seed))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_items, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_items, shuffle=False)


class EpochShuffle(RandomSampler):
    """A shuffle drawn from (seed, epoch) alone, so a run resumed at epoch e sees the order an
    uninterrupted run saw; Lightning calls ``set_epoch`` (and swaps in a seeded DistributedSampler on
    several devices)."""

    def __init__(self, data, seed: int):
        super().__init__(data)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


class TraceBatch:
    """A batch of traces as one opaque object: units per trace vary and the selector pads them
    (in the LightningModule); being no collection, Lightning does not walk or copy its views."""

    def __init__(self, items: list[LabelledTrace]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)


def as_batch(items: list[LabelledTrace]) -> TraceBatch:
    return TraceBatch(items)


def _float(value) -> float | None:
    return None if value is None else float(value)


def _single(values: set):
    values = {v for v in values if v is not None}
    if len(values) > 1:
        return ", ".join(sorted(map(str, values)))
    return values.pop() if values else None
