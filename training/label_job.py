"""`tokenrelay label` as a Lightning ``predict`` job: the large model labels traces, resumably.

Each rank loads the large Agent on its own device (``configure_model``), labels batches of the
traces not yet in the output folder, and a prediction writer writes every batch as one atomic
Parquet shard (``selector.shards.ShardWriter``, tag ``r{global_rank}``). Killed and run again, the
job skips the ids already written: nothing is lost and nothing is duplicated. Accelerator,
devices, strategy and nodes are Lightning's, so the same command runs on a laptop CPU or many GPUs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import statistics
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader

from selector.agents import DTYPES, Agent
from selector.io import write_json_atomic
from selector.remote import RemoteAgent, RemoteConfig
from selector.shards import OutputLock, ShardWriter
from selector.traces import load_traces
from selector.units import GRANULARITIES, unit_token_counts

from .labelers import METHODS, Labeler, LabelInput, get_labeler, reference_agreement

__all__ = ["LabelConfig", "LabelModule", "ShardPredictionWriter", "label_record", "run_label"]


@dataclass
class LabelConfig:
    """`tokenrelay label`: the large model labels which reasoning units raise its gold-answer likelihood."""

    traces: str
    """Traces folder written by `tokenrelay reason` (Parquet shards)."""
    model: str
    """The large model (the labeler): local folder or hub id (with ``endpoint``: its tokenizer folder)."""
    out: str
    """Output folder for labelled traces (Parquet shards); re-running skips ids already there."""
    endpoint: RemoteConfig | None = None
    """Score with the large model behind an OpenAI-compatible engine (vLLM, `tokenrelay serve`) through its
    prompt log-probs; every method but gradient (it needs the weights here). The job then runs on cpu."""
    method: str = "ablation"
    """Labeler: ablation (random masks + linear surrogate), loo (leave-one-out), solo (each unit alone:
    f({i}) - f(none), short prompts) or gradient (grad x input)."""
    units: str = "sentence"
    """Unit granularity: token, word or sentence. Token units are cut with the tokenizer of the
    small model that wrote the traces, as the relay cuts them, whatever the large model's tokenizer."""
    unit_tokenizer: str | None = None
    """Token units: the small model's tokenizer (folder or hub id); null = the ``model`` each trace records."""
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
    antithetic: bool = False
    """ablation: draw masks in complementary pairs (each unit kept in exactly one mask of a pair)."""
    reference: str | None = None
    """Reference labeler (e.g. loo) run besides on a sample of traces; a deterministic labeler's
    reliability is its Spearman with it (ablation reports its split-half agreement anyway)."""
    reference_rate: float = 0.0
    """Share of traces (chosen by id, stable across resumes) that the reference labeler also labels."""
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
        if self.reference is not None and self.reference not in METHODS:
            raise ValueError(f"reference must be one of {METHODS}, got {self.reference!r}")
        if not 0 <= self.reference_rate <= 1:
            raise ValueError(f"reference_rate must be in [0, 1], got {self.reference_rate}")
        if self.alpha < 0 or not 0 <= self.holdout < 1:
            raise ValueError("need alpha >= 0 and 0 <= holdout < 1")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if self.dtype not in (*DTYPES, "auto"):
            raise ValueError(f"dtype must be one of {[*DTYPES, 'auto']}, got {self.dtype!r}")
        if self.endpoint is not None and "gradient" in (self.method, self.reference):
            raise ValueError(
                "gradient labeling needs the large model's weights, which an endpoint does not expose: "
                "with an endpoint use method/reference ablation, loo or solo"
            )

    def labeler(self, device_type: str = "cpu", method: str | None = None) -> Labeler:
        """The labeler (or ``method``'s, e.g. the reference), its scoring batch chosen for
        ``device_type`` when score_batch_size is null."""
        return get_labeler(
            method or self.method,
            masks=self.masks,
            keep_prob=self.keep_prob,
            fit=self.fit,
            alpha=self.alpha,
            holdout=self.holdout,
            seed=self.seed,
            antithetic=self.antithetic,
            batch_size=self.score_batch_size or (1 if device_type == "cpu" else 16),
        )

    def in_reference_sample(self, trace_id: str) -> bool:
        """Whether the reference labeler also labels this trace (a stable choice by id)."""
        if self.reference is None or self.reference_rate <= 0:
            return False
        digest = hashlib.sha256(f"reference:{trace_id}".encode()).digest()
        return int.from_bytes(digest[:4], "little") / 2**32 < self.reference_rate


def unit_tokenizer(path: str | None, record: Mapping, loaded: dict | None = None):
    """The tokenizer that cuts token units of ``record``: the small model's (``path``, else the
    model the trace records), loaded once per path into ``loaded``."""
    name = path or record.get("model")
    if not name:
        raise ValueError(
            f"trace {record.get('id')!r} records no small model: token units need its tokenizer "
            "(pass --unit-tokenizer PATH)"
        )
    loaded = {} if loaded is None else loaded
    if name not in loaded:
        from transformers import AutoTokenizer

        try:
            loaded[name] = AutoTokenizer.from_pretrained(name)
        except (OSError, ValueError) as err:
            raise ValueError(
                f"cannot load the small model's tokenizer {name!r} for token units ({err}); "
                "pass --unit-tokenizer PATH"
            ) from err
    return loaded[name]


def label_record(
    agent: Agent,
    labeler: Labeler,
    record: Mapping,
    granularity: str,
    reference: Labeler | None = None,
    small_tokenizer=None,
) -> dict:
    """A trace record plus its labels (the labelled-trace contract of PREAMBLE/DESIGN); with a
    ``reference`` labeler, a deterministic labeler's reliability is its agreement with it.
    ``small_tokenizer`` cuts token units (the relay cuts them with the small model's tokenizer)."""
    if granularity == "token" and small_tokenizer is None:
        raise ValueError("token units need the small model's tokenizer (small_tokenizer=...)")
    item = LabelInput.from_trace(record, granularity, small_tokenizer)
    cache: dict = {}  # f values shared with the reference (all and none at least)
    result = labeler(agent, item, cache=cache)
    if reference is not None:
        reference_agreement(result, reference(agent, item, cache=cache), reference.name)
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
        "label_reliability": result.reliability,
        "label_reliability_kind": result.reliability_kind,
        "label_reliability_top": result.reliability_top,
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
        self._tokenizers: dict = {}  # token units: the small models' tokenizers, by path

    def configure_model(self) -> None:
        if self.agent is None:
            device = self.trainer.strategy.root_device
            endpoint = self.config.endpoint
            if endpoint is not None:  # as `tokenrelay serve` builds one: the model path is its tokenizer
                self.agent = RemoteAgent(replace(endpoint, tokenizer=endpoint.tokenizer or self.config.model))
            else:
                self.agent = Agent.from_pretrained(
                    self.config.model, dtype=self.config.dtype, device=str(device)
                )
        self.labeler = self.config.labeler(self.device_type)

    @property
    def device_type(self) -> str:
        """Where the large model runs: its device type, or 'remote' (the engine batches: 16 a request)."""
        return "remote" if isinstance(self.agent, RemoteAgent) else self.agent.device.type

    def predict_step(self, batch: list[dict], batch_idx: int) -> list[dict]:
        cfg = self.config
        reference = cfg.labeler(self.device_type, cfg.reference) if cfg.reference else None
        self.finished = []  # the batch's traces labelled so far: an interrupt (SIGTERM, Ctrl-C) saves them
        for rec in batch:
            self.finished.append(
                label_record(
                    self.agent,
                    self.labeler,
                    rec,
                    cfg.units,
                    reference if cfg.in_reference_sample(str(rec["id"])) else None,
                    unit_tokenizer(cfg.unit_tokenizer, rec, self._tokenizers)
                    if cfg.units == "token"
                    else None,
                )
            )
        return self.finished


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
        if isinstance(exception, KeyboardInterrupt) and self.writer is not None:
            self.writer.write(getattr(pl_module, "finished", []))  # the interrupted batch's finished traces
        self.teardown(trainer, pl_module)  # interrupted: what is written stays, the lock goes

    def on_predict_end(self, trainer, pl_module) -> None:
        trainer.strategy.barrier()  # every rank's shards are written before rank 0 counts them

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


def reliability_summary(out: str | os.PathLike) -> dict:
    """Median reliability of every labelled trace in ``out``, per kind (split_half, vs_loo, ...):
    the Spearman figure and, where recorded, the top-quarter agreement (``median_top``)."""
    from selector.shards import read_records

    try:
        records = read_records(out)
        wanted = ["label_reliability", "label_reliability_kind", "label_reliability_top"]
        records = records.select_columns([c for c in wanted if c in records.column_names]).to_list()
    except (FileNotFoundError, ValueError, KeyError):
        return {}
    kinds: dict[str, list[float]] = {}
    tops: dict[str, list[float]] = {}
    for rec in records:
        if rec.get("label_reliability") is not None:
            kinds.setdefault(rec["label_reliability_kind"], []).append(rec["label_reliability"])
        if rec.get("label_reliability_top") is not None:
            tops.setdefault(rec["label_reliability_kind"], []).append(rec["label_reliability_top"])
    summary = {
        kind: {"traces": len(values), "median": statistics.median(values), "mean": statistics.fmean(values)}
        for kind, values in sorted(kinds.items())
    }
    for kind, values in tops.items():
        summary.setdefault(kind, {"traces": len(values)})["median_top"] = statistics.median(values)
    return summary


def run_label(config: LabelConfig, agent: Agent | None = None, callbacks: Sequence[L.Callback] = ()) -> dict:
    """Label every trace not already in ``config.out`` (see ``_run_label``), holding the folder's job lock:
    a second job on it stops at once, before reading traces or loading the large model. DDP's other
    ranks re-run this command and skip the job lock (each rank's writer locks its own shards)."""
    launched_rank = any(int(os.environ.get(n) or 0) != 0 for n in ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK"))
    if launched_rank:
        return _run_label(config, agent, callbacks)
    with OutputLock(config.out, "the labelled traces folder"):
        return _run_label(config, agent, callbacks)


def _run_label(config: LabelConfig, agent: Agent | None = None, callbacks: Sequence[L.Callback] = ()) -> dict:
    """Label every trace not already in ``config.out``; returns (and writes) a summary.

    Traces without reasoning are skipped and counted; an empty gold answer is an error naming the
    trace. ``agent`` reuses a loaded large model (tests, notebooks); ``callbacks`` are added to the
    Trainer after the writer.
    """
    records = list(load_traces(config.traces))  # rows, hidden states as arrays (to_list makes slow lists)
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
            accelerator="cpu" if config.endpoint is not None else config.accelerator,
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
    summary["reliability"] = reliability_summary(config.out)
    summary["config"] = asdict(config)
    write_json_atomic(Path(config.out) / "summary.json", summary)
    return summary
