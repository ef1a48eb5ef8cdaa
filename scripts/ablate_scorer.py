"""Scorer ablations: backbone (hidden / encoder), unit granularity (token / word / sentence), loss, head.

    python -m scripts.ablate_scorer --config configs/ablations/scorer_backbone.yaml
    python -m scripts.ablate_scorer --config configs/ablations/scorer_granularity.yaml
    python -m scripts.ablate_scorer --config configs/ablations/scorer_loss.yaml
    python -m scripts.ablate_scorer --config configs/ablations/scorer_head.yaml
    python -m scripts.ablate_scorer --config configs/ablations/scorer_encoder_layers.yaml

One selector is trained per value of the ablated ``axis`` with the training command's own pieces
(``training.train_cli.TrainCLI`` over ``train_config``: the same SelectorModule, TraceDataModule,
Trainer, checkpoint and release callbacks as ``tokenrelay train``); only the axis changes between
variants (same seed, same id-hash train/val split). Per variant it reports the validation metrics
the module logs (Spearman, NDCG@k, AUROC of top-q, gain@b, gain recovered@b, oracle fraction@b),
measured again from the best checkpoint (highest val/spearman); training wall time (``fit``,
validation included, reading the data not) and training traces per second of it; and the
selector's inference time per trace (features + forward, what the relay pays; after a warm-up).

Resumable: each variant trains under ``OUT/variants/VALUE/`` (a killed variant resumes from its
``last.ckpt``), and its result is saved as ``OUT/variants/VALUE.json`` when it finishes; a rerun
skips finished variants. Writes ``scorer_AXIS.{md,csv,json,png}`` to ``out``.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scripts.ablation_common import (
    VariantStore,
    check_settings,
    config_from_argv,
    main_for,
    quiet_lightning,
    safe_name,
    write_outputs,
)
from selector.progress import progress_bar
from selector.units import GRANULARITIES

PROG = "python -m scripts.ablate_scorer"
AXES = {
    "backbone": ("hidden", "encoder"),
    "granularity": GRANULARITIES,
    "loss": ("listwise", "pairwise", "bce_top_q"),
    "head": ("transformer", "mlp"),
    "encoder_layers": ("1", "2", "3", "4", "5", "6"),  # encoder backbone: how many of its layers run
}


@dataclass
class ScorerAblationConfig:
    """Scorer ablation: train one selector per value of one axis, everything else fixed."""

    axis: str = "loss"
    """What varies: backbone (hidden | encoder), granularity (token | word | sentence), loss (listwise | pairwise | bce_top_q), head (transformer | mlp: units attend to each other, or are scored each alone) or encoder_layers (1-6: the encoder backbone cut to its first N layers; quality vs inference ms)."""
    values: list[str] | None = None
    """The axis values to compare (null: all of them)."""
    train_config: str = "configs/train.yaml"
    """The `tokenrelay train` YAML every variant starts from (model, data, trainer settings)."""
    data: str | None = None
    """Labelled traces for the backbone, loss, head and encoder_layers axes (null: the train config's data.data)."""
    labels: dict[str, str] = field(default_factory=dict)
    """granularity axis: one labelled-traces folder per granularity (`tokenrelay label --units G`)."""
    encoder: str | None = None
    """backbone and encoder_layers axes: the text encoder (null: the train config's model.scorer.encoder)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Settings for every variant, as `tokenrelay train` options without dashes (e.g. trainer.max_epochs: 10)."""
    variant_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Extra settings for one variant, keyed by its value (e.g. encoder: {model.lr: 0.0005})."""
    seed: int = 0
    """seed_everything for every variant (the train/val split is by id hash: the same for all)."""
    out: str = "runs/ablations/scorer"
    """Output folder: one training run per variant under variants/, the table, JSON, CSV and plot."""
    infer_traces: int = 16
    """Traces (validation first) on which the selector's inference time is measured."""
    infer_repeats: int = 5
    """Timed calls per trace (median)."""
    progress_bar: bool = False
    """Show Lightning's per-epoch progress bar inside each variant (the variants have their own bar)."""
    plot: bool = True
    """Write the plot: validation metrics and inference time per variant."""

    def __post_init__(self) -> None:
        if self.axis not in AXES:
            raise ValueError(f"axis must be one of {tuple(AXES)}, got {self.axis!r}")
        allowed = AXES[self.axis]
        self.values = list(allowed) if self.values is None else list(self.values)
        bad = [v for v in self.values if v not in allowed]
        if bad or not self.values:
            raise ValueError(f"{self.axis} values must be a non-empty list from {allowed}, got {self.values}")
        if len(set(self.values)) != len(self.values):
            raise ValueError(f"values repeat: {self.values}")
        if self.axis == "granularity":
            missing = [v for v in self.values if not self.labels.get(v)]
            if missing:
                raise ValueError(
                    f"the granularity axis needs a labelled-traces folder per value in labels: none for {missing}"
                )
            if self.data is not None:
                raise ValueError("the granularity axis reads labels (one folder per granularity), not data")
        extra = sorted(set(self.variant_overrides) - set(self.values))
        if extra:
            raise ValueError(f"variant_overrides for values that are not ablated: {extra}")
        for name, opts in [("overrides", self.overrides), *self.variant_overrides.items()]:
            for key in opts:
                if key.startswith("-") or key in (
                    "config",
                    "trainer.default_root_dir",
                    "release.dirpath",
                    "seed_everything",
                ):
                    raise ValueError(f"{name}: {key!r} is set by the ablation itself (or has dashes)")
        if self.infer_traces < 1 or self.infer_repeats < 1:
            raise ValueError("infer_traces and infer_repeats must be >= 1")

    def variant_args(self, value: str, root: Path) -> list[str]:
        """The `tokenrelay train` arguments of one variant."""
        axis: dict[str, Any] = {}
        if self.data is not None:
            axis["data.data"] = self.data
        if self.axis == "backbone":
            axis["model.scorer.backbone"] = value
            if value == "encoder" and self.encoder is not None:
                axis["model.scorer.encoder"] = self.encoder
        elif self.axis == "granularity":
            axis["data.data"] = self.labels[value]
            axis["model.scorer.granularity"] = value
        elif self.axis == "head":
            axis["model.scorer.head"] = value
        elif self.axis == "encoder_layers":
            axis["model.scorer.backbone"] = "encoder"
            axis["model.scorer.encoder_layers"] = int(value)
            if self.encoder is not None:
                axis["model.scorer.encoder"] = self.encoder
        else:
            axis["model.loss"] = value
        opts = {
            "trainer.enable_progress_bar": self.progress_bar,
            "trainer.enable_model_summary": False,
            **self.overrides,
            **axis,
            **self.variant_overrides.get(value, {}),
            "trainer.default_root_dir": str(root),
            # each variant's release stays in its own folder, whatever the train config names
            # (configs/demo_train.yaml releases into checkpoints/demo/selector)
            "release.dirpath": str(root / "selector"),
        }
        args = ["--config", self.train_config, "--seed_everything", str(self.seed)]
        for key, v in opts.items():
            args.append(f"--{key}={v if isinstance(v, str) else json.dumps(v)}")
        return args


def config_from_yaml(path: str) -> ScorerAblationConfig:
    """Build the config of a YAML file without running it (tests/test_configs.py)."""
    return config_from_argv(ScorerAblationConfig, ["--config", str(path)], PROG)


def _count_traces_callback():
    from lightning.pytorch import Callback

    class CountTraces(Callback):
        """Training traces processed (for traces/s)."""

        def __init__(self):
            self.traces = 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.traces += len(batch["meta"]) if isinstance(batch, dict) else len(batch)

    return CountTraces()


def build_cli(args: list[str], callbacks: Sequence = ()):
    """Model, data module and trainer of one variant, built by the training CLI (nothing runs)."""
    from training.datamodule import TraceDataModule
    from training.module import SelectorModule
    from training.train_cli import RunConfig, TrainCLI

    return TrainCLI(
        SelectorModule,
        TraceDataModule,
        args=args,
        run=False,
        save_config_callback=RunConfig,
        seed_everything_default=0,
        trainer_defaults={"callbacks": list(callbacks)},
        parser_kwargs={"prog": "tokenrelay train (ablation variant)"},
    )


def _inference_ms(selector, views, repeats: int) -> dict:
    selector.eval()
    for view in views:  # warm-up (the first calls of a process pay one-time costs)
        selector(view)
    times = []
    for view in views:
        per = []
        for _ in range(repeats):
            t = time.perf_counter()
            selector(view)
            per.append(time.perf_counter() - t)
        times.append(statistics.median(per))
    return {"infer_ms_per_trace": 1000 * statistics.fmean(times), "infer_ms_min": 1000 * min(times)}


class Variant:
    """One variant built by the training CLI up front (a bad option fails before anything trains)."""

    def __init__(self, config: ScorerAblationConfig, value: str, root: Path):
        self.value, self.root = value, root
        self.args = config.variant_args(value, root)
        self.counter = _count_traces_callback()
        self.cli = build_cli(self.args, [self.counter])


def train_variant(config: ScorerAblationConfig, variant: Variant) -> dict:
    """Train (or resume) one variant and measure it."""
    from lightning.pytorch import seed_everything

    value, root, args, counter = variant.value, variant.root, variant.args, variant.counter
    trainer, module, dm = variant.cli.trainer, variant.cli.model, variant.cli.datamodule
    last = root / "checkpoints" / "last.ckpt"
    resumed = last.exists()
    dm.setup("fit")  # reading the labelled traces is not training time
    seed_everything(config.seed, verbose=False)  # the net is built in setup: same seed for every variant
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=str(last) if resumed else None)
    train_s = time.perf_counter() - start
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    source = "best" if best else "last"
    ckpt = best or (str(last) if last.exists() else None)
    if ckpt is None:
        source = "final"
    logged = trainer.validate(module, datamodule=dm, ckpt_path=ckpt, verbose=False)[0]
    metrics = {k.removeprefix("val/"): float(v) for k, v in logged.items() if k.startswith("val/")}
    views = [it.view for it in (dm.val_items + dm.train_items)[: config.infer_traces]]
    val_ids = sorted(it.id for it in dm.val_items)
    return {
        "variant": value,
        "axis": config.axis,
        "args": args,
        "metrics": metrics,
        "checkpoint": source,
        "checkpoint_path": ckpt,
        "best_score": float(trainer.checkpoint_callback.best_model_score)
        if trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_score is not None
        else None,
        "train_seconds": train_s,
        "resumed": resumed,
        "traces_trained": counter.traces,
        "traces_per_s": counter.traces / train_s if train_s > 0 and counter.traces else None,
        "epochs": int(trainer.current_epoch),
        "steps": int(trainer.global_step),
        "n_train": len(dm.train_items),
        "n_val": len(dm.val_items),
        "val_ids_sha": hashlib.sha256("\n".join(val_ids).encode()).hexdigest()[:12],
        "mean_units": statistics.fmean(len(v.units) for v in views),
        "trainable_params": sum(p.numel() for p in module.net.parameters() if p.requires_grad),
        **_inference_ms(module.selector, views, config.infer_repeats),
        "release": str(root / "selector"),
    }


def _columns(results: list[dict]) -> list[tuple[str, str, str]]:
    keys = list(results[0]["metrics"]) if results else []
    cols = [("variant", "variant", "")]
    order = ["spearman", "ndcg", "auroc", "gain@", "gain_recovered@", "oracle_frac@"]
    for prefix in order:
        for k in keys:
            if k.startswith(prefix):
                cols.append((k, k, ".3f"))
    cols += [
        ("train_seconds", "train s", ".1f"),
        ("traces_per_s", "traces/s", ".1f"),
        ("infer_ms_per_trace", "infer ms/trace", ".2f"),
        ("n_train", "train", "d"),
        ("n_val", "val", "d"),
        ("checkpoint", "ckpt", ""),
    ]
    return cols


def _plot(rows: list[dict], axis: str, path: Path) -> None:
    from selector.evaluation.plots import save_figure, subplots

    names = [r["variant"] for r in rows]
    keys = [k for k in ("spearman", "gain_recovered@0.25", "oracle_frac@0.25") if k in rows[0]]
    fig, (left, right) = subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [2, 1]})
    width = 0.8 / max(1, len(keys))
    for j, key in enumerate(keys):
        xs = [i + (j - (len(keys) - 1) / 2) * width for i in range(len(names))]
        left.bar(xs, [r.get(key) or 0.0 for r in rows], width, label=key)
    left.set_xticks(range(len(names)), names)
    left.set_title(f"validation (best checkpoint) by {axis}")
    left.axhline(0, color="black", linewidth=0.5)
    left.legend(fontsize=8)
    left.grid(axis="y", alpha=0.3)
    right.bar(names, [r["infer_ms_per_trace"] for r in rows], color="gray")
    right.set_title("selector inference ms / trace")
    right.grid(axis="y", alpha=0.3)
    save_figure(fig, path)


def run_ablation(config: ScorerAblationConfig, progress: bool = True) -> dict:
    """Train every variant not finished yet, then write the table, JSON, CSV and plot."""
    if not Path(config.train_config).exists():
        raise FileNotFoundError(f"train_config {config.train_config!r} does not exist")
    for source in [config.data, *config.labels.values()]:
        if source is not None and not Path(source).exists():
            raise FileNotFoundError(f"labelled traces {source!r} do not exist (run `tokenrelay label`)")
    quiet_lightning()
    out = Path(config.out)
    settings = asdict(config)
    for key in ("values", "out", "plot", "progress_bar", "infer_traces", "infer_repeats"):
        settings.pop(key)
    settings["train_config_sha"] = hashlib.sha256(Path(config.train_config).read_bytes()).hexdigest()[:12]
    check_settings(out, settings)
    store = VariantStore(out)
    todo = [
        Variant(config, v, out / "variants" / safe_name(v)) for v in config.values if store.load(v) is None
    ]
    with progress_bar(disable=not progress) as bar:
        task = bar.add_task(f"scorer ablation ({config.axis})", total=len(config.values))
        bar.advance(task, len(config.values) - len(todo))
        for variant in todo:
            bar.update(task, description=f"{config.axis} = {variant.value}")
            store.save(variant.value, train_variant(config, variant))
            bar.advance(task)
    results = [store.load(v) for v in config.values]
    rows = [{**{k: v for k, v in r.items() if k != "metrics"}, **r["metrics"]} for r in results]
    same_split = len({r["val_ids_sha"] for r in results}) == 1
    summary = {
        "axis": config.axis,
        "config": asdict(config),
        "same_val_split": same_split,
        "variants": results,
    }
    split = "the same validation traces" if same_split else "DIFFERENT validation traces (see n_val)"
    intro = (
        f"# Scorer ablation: {config.axis}\n\nOne selector per {config.axis} from `{config.train_config}` "
        f"(seed {config.seed}), metrics from each variant's best checkpoint on {split}; "
        "infer ms/trace = features + forward for one trace, median of repeats, mean over traces."
    )
    write_outputs(
        out,
        f"scorer_{config.axis}",
        summary,
        rows,
        _columns(results),
        intro,
        plot=(lambda p: _plot(rows, config.axis, p)) if config.plot else None,
    )
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(ScorerAblationConfig, run_ablation, PROG, argv)


if __name__ == "__main__":
    sys.exit(main())
