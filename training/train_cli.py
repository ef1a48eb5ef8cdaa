"""`tokenrelay train`: fit a selector with LightningCLI and release it as a checkpoint folder.

    tokenrelay train --config configs/train.yaml [--trainer.max_epochs 5 ...] [--ckpt_path last.ckpt]

Everything under ``trainer.default_root_dir`` (``ROOT``):

- ``ROOT/config.yaml``: the full resolved config of the run;
- ``ROOT/checkpoints/best.ckpt`` (highest val/spearman) and ``last.ckpt``: Lightning checkpoints,
  for resuming only (``--ckpt_path ROOT/checkpoints/last.ckpt``);
- ``ROOT/selector/``: the release checkpoint (``TokenSelector.save_pretrained`` + model card),
  written from the final weights when fit ends (``release.dirpath`` moves it);
- ``ROOT/lightning_logs/version_N/``: metrics and hyperparameters.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from .datamodule import TraceDataModule
from .module import SelectorModule

__all__ = ["ReleaseCheckpoint", "RunCheckpoint", "TrainCLI", "main", "train_config"]


class ReleaseCheckpoint(Callback):
    """At the end of fit, write the release folder (config.json, model.safetensors, README.md)."""

    command: str | None = None
    """The `tokenrelay train` command line of this process, for the model card (set by ``main``)."""

    def __init__(self, dirpath: str | None = None):
        """
        Args:
            dirpath: Release folder (null: ROOT/selector, ROOT being trainer.default_root_dir).
        """
        self.dirpath = dirpath

    def release_dir(self, trainer: Trainer) -> Path:
        return Path(self.dirpath) if self.dirpath else Path(trainer.default_root_dir) / "selector"

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if (
            trainer.is_global_zero
            and isinstance(pl_module, SelectorModule)
            and pl_module.selector is not None
        ):
            card = pl_module.card_info()
            if self.command:
                card["command"] = self.command
            path = pl_module.selector.save_pretrained(self.release_dir(trainer), card=card)
            print(f"selector checkpoint written to {path}")


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that writes to ROOT/checkpoints by default (not inside a logger version)."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")
        super().setup(trainer, pl_module, stage)


class RunConfig(SaveConfigCallback):
    """Save the full resolved config as ROOT/config.yaml (overwritten when a run resumes)."""

    def __init__(self, parser, config, **kwargs):
        kwargs.update(save_to_log_dir=False, overwrite=True)
        super().__init__(parser, config, **kwargs)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        path = Path(trainer.default_root_dir) / self.config_filename
        path.parent.mkdir(parents=True, exist_ok=True)
        self.parser.save(self.config, str(path), skip_none=False, overwrite=True, multifile=False)


class TrainCLI(LightningCLI):
    """LightningCLI with the run's checkpoint and release callbacks configurable from YAML."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/spearman",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best",
                "checkpoint.save_top_k": 1,
                "checkpoint.save_last": True,
                "checkpoint.enable_version_counter": False,
            }
        )
        parser.add_lightning_class_args(ReleaseCheckpoint, "release")


def _cli(args: list[str], run: bool) -> TrainCLI:
    return TrainCLI(
        SelectorModule,
        TraceDataModule,
        args=args,
        run=run,
        save_config_callback=RunConfig,
        seed_everything_default=0,
        parser_kwargs={"prog": "tokenrelay train"} if not run else {"fit": {"prog": "tokenrelay train"}},
    )


def train_config(path: str | os.PathLike) -> TrainCLI:
    """Instantiate model, data and trainer from a YAML without training (configs test)."""
    return _cli(["--config", str(path)], run=False)


def main(argv: Sequence[str]) -> int:
    """``tokenrelay train [--config FILE] [overrides] [--ckpt_path CKPT]``: LightningCLI ``fit``."""
    from selector.cli import run_command

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ReleaseCheckpoint.command = shlex.join(["tokenrelay", "train", *argv])
    try:
        return run_command(lambda: _cli(["fit", *argv], run=True), "tokenrelay train")
    finally:  # a TrainCLI built later in this process (the ablations) must not inherit this command line
        ReleaseCheckpoint.command = None
