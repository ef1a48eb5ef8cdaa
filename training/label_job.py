"""`tokenrelay label` as a Lightning ``predict`` job: the large model labels traces, resumably.

Each rank loads the large Agent on its own device (``configure_model``), labels batches of the
traces not yet in the output folder, and a prediction writer writes every batch as one atomic
Parquet shard (``selector.shards.ShardWriter``, tag ``r{global_rank}``). Killed and run again, the
job skips the ids already written: nothing is lost and nothing is duplicated. Accelerator,
devices, strategy and nodes are Lightning's, so the same command runs on a laptop CPU or many GPUs.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader

from selector.agents import DTYPES, Agent
from selector.shards import ShardWriter
from selector.traces import load_traces
from selector.units import GRANULARITIES, unit_token_counts

from .labelers import METHODS, Labeler, LabelInput, get_labeler

__all__ = ["LabelConfig", "LabelModule", "ShardPredictionWriter", "label_record", "run_label"]


@dataclass
class LabelConfig:
    """`tokenrelay label`: the large model labels which reasoning units raise its gold-answer likelihood."""

    traces: str
    """Traces folder written by `tokenrelay reason` (Parquet shards)."""
    model: str
    """The large model (the labeler): local folder or hub id."""
    out: str
    """Output folder for labelled traces (Parquet shards); re-running skips ids already there."""
    method: str = "ablation"
    """Labeler: ablation (random masks + linear surrogate), loo (leave-one-out) or gradient (grad x input)."""
    units: str = "sentence"
    """Unit granularity: token (large-model tokenizer), word or sentence."""
    masks: int = 32
    """ablation: number of random keep-masks (all and none are scored besides)."""
    keep_prob: float = 0.5
    """ablation: probability that a unit is kept in a random mask."""
    fit: str = "ridge"
    """ablation: surrogate regression, ridge or lasso (sparse, L1)."""
    alpha: float = 0.01
    """ablation: regularization strength of the surrogate fit."""
    holdout: float = 0.2
    """ablation: share of the random masks held out per fold (k = 1/holdout folds) for the reported R^2; 0 = none."""
    seed: int = 0
    """ablation: masks are drawn from (seed, trace id), so reruns and resumes give the same labels."""
    score_batch_size: int | None = None
    """Transfer prompts of one trace scored per forward pass (after the shared prefix). null: 1 on
    CPU, where walking the prompts one at a time as a prefix tree is fastest (batching only adds
    padding there), 16 on an accelerator."""
    batch_size: int = 4
    """Traces per predict step; each step's labelled traces are written as one shard."""
    limit: int | None = None
    """Label only the first N traces."""
    dtype: str = "float32"
    """Large-model dtype: float32, bfloat16, float16 or auto."""
    accelerator: str = "auto"
    """Lightning accelerator: cpu, gpu, cuda, mps, auto."""
    devices: int | str = "auto"
    """Lightning devices: a count, a list like "0,1", -1 for all, or auto."""
    strategy: str = "auto"
    """Lightning strategy: auto, ddp, ddp_spawn, ... (each rank labels its share of the traces)."""
    num_nodes: int = 1
    """Machines taking part (with a multi-node strategy)."""
    progress_bar: bool = True
    """Show Lightning's progress bar."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.units not in GRANULARITIES:
            raise ValueError(f"units must be one of {GRANULARITIES}, got {self.units!r}")
        for name in ("masks", "score_batch_size", "batch_size", "num_nodes"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.keep_prob < 1:
            raise ValueError(f"keep_prob must be in (0, 1), got {self.keep_prob}")
        if self.fit not in ("ridge", "lasso"):
            raise ValueError(f"fit must be 'ridge' or 'lasso', got {self.fit!r}")
        if self.alpha < 0 or not 0 <= self.holdout < 1:
            raise ValueError("need alpha >= 0 and 0 <= holdout < 1")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if self.dtype not in (*DTYPES, "auto"):
            raise ValueError(f"dtype must be one of {[*DTYPES, 'auto']}, got {self.dtype!r}")

    def labeler(self, device_type: str = "cpu") -> Labeler:
        """The labeler, its scoring batch chosen for ``device_type`` when score_batch_size is null."""
        return get_labeler(
            self.method,
            masks=self.masks,
            keep_prob=self.keep_prob,
            fit=self.fit,
            alpha=self.alpha,
            holdout=self.holdout,
            seed=self.seed,
            batch_size=self.score_batch_size or (1 if device_type == "cpu" else 16),
        )


def label_record(agent: Agent, labeler: Labeler, record: Mapping, granularity: str) -> dict:
    """A trace record plus its labels (the labelled-trace contract of PREAMBLE/DESIGN)."""
    item = LabelInput.from_trace(record, granularity, agent.tokenizer)
    result = labeler(agent, item)
    return {
        **record,
        "granularity": granularity,
        "unit_starts": [u.start for u in item.units],
        "unit_ends": [u.end for u in item.units],
        "unit_token_counts": unit_token_counts(item.reasoning, item.units, agent.tokenizer),
        "labels": [float(s) for s in result.scores],
        "f_all": result.f_all,
        "f_none": result.f_none,
        "label_method": result.method,
        "fit_r2": result.fit_r2,
        "label_forward_passes": result.forward_passes,
        "label_seconds": result.seconds,
        "labeler_model": agent.name,
    }


class LabelModule(L.LightningModule):
    """Holds the large Agent (not as a registered submodule: Lightning never wraps or casts it)."""

    def __init__(self, config: LabelConfig, agent: Agent | None = None):
        super().__init__()
        self.config = config
        self.labeler = config.labeler()
        self.agent = agent

    def configure_model(self) -> None:
        if self.agent is None:
            device = self.trainer.strategy.root_device
            self.agent = Agent.from_pretrained(self.config.model, dtype=self.config.dtype, device=str(device))
        self.labeler = self.config.labeler(self.agent.device.type)

    def predict_step(self, batch: list[dict], batch_idx: int) -> list[dict]:
        return [label_record(self.agent, self.labeler, rec, self.config.units) for rec in batch]


class ShardPredictionWriter(BasePredictionWriter):
    """Writes each predicted batch as one atomic shard; ids already written are never written again."""

    def __init__(self, out: str | os.PathLike):
        super().__init__(write_interval="batch")
        self.out = Path(out)
        self.writer: ShardWriter | None = None
        self.written = 0

    def setup(self, trainer, pl_module, stage: str | None = None) -> None:
        self.writer = ShardWriter(self.out, tag=f"r{trainer.global_rank}", exclusive=True)

    def teardown(self, trainer, pl_module, stage: str | None = None) -> None:
        if self.writer is not None:
            self.writer.close()  # the folder lock: a later job in this process may write here again
            self.writer = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.teardown(trainer, pl_module)  # interrupted: what is written stays, the lock goes

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ):
        if self.writer is None:
            self.setup(trainer, pl_module)
        before = len(self.writer.done)
        self.writer.write(prediction)
        self.written += len(self.writer.done) - before


def _as_list(batch: list) -> list:
    return batch


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def run_label(config: LabelConfig, agent: Agent | None = None, callbacks: Sequence[L.Callback] = ()) -> dict:
    """Label every trace not already in ``config.out``; returns (and writes) a summary.

    Traces without reasoning are skipped and counted; an empty gold answer is an error naming the
    trace. ``agent`` reuses a loaded large model (tests, notebooks); ``callbacks`` are added to the
    Trainer after the writer.
    """
    records = load_traces(config.traces).to_list()
    if config.limit is not None:
        records = records[: config.limit]
    for rec in records:
        if rec.get("answer") is None or not str(rec["answer"]).strip():
            raise ValueError(f"trace {rec['id']!r}: the gold answer is empty; cannot label it")
    skipped = [str(r["id"]) for r in records if not (r.get("reasoning") or "").strip()]
    done = ShardWriter(config.out).done
    todo = [r for r in records if str(r["id"]) not in done and (r.get("reasoning") or "").strip()]
    summary = {
        "traces": len(records),
        "already_done": sum(str(r["id"]) in done for r in records),
        "skipped_no_reasoning": len(skipped),
        "skipped_ids": skipped[:20],
        "labelled": 0,
        "labeler": config.labeler().describe(),
        "units": config.units,
        "model": config.model,
    }
    if todo:
        for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
            logging.getLogger(name).setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*")  # Lightning-internal deprecation
        writer = ShardPredictionWriter(config.out)
        trainer = L.Trainer(
            accelerator=config.accelerator,
            devices=config.devices,
            strategy=config.strategy,
            num_nodes=config.num_nodes,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=config.progress_bar,
            inference_mode=config.method != "gradient",
            callbacks=[writer, *callbacks],
        )
        loader = DataLoader(todo, batch_size=config.batch_size, shuffle=False, collate_fn=_as_list)
        module = LabelModule(config, agent)
        trainer.predict(module, dataloaders=loader, return_predictions=False)
        summary["labeler"] = module.labeler.describe()  # as run: the scoring batch follows the device
        if not trainer.is_global_zero:
            return summary
    after = ShardWriter(config.out).done
    summary["labelled"] = sum(str(r["id"]) in after for r in records) - summary["already_done"]
    summary["config"] = asdict(config)
    _write_json_atomic(Path(config.out) / "summary.json", summary)
    return summary
