"""`tokenrelay train`: fit a selector with LightningCLI and release it as a checkpoint folder.

    tokenrelay train --config configs/train.yaml [--trainer.max_epochs 5 ...]

Everything under ``trainer.default_root_dir`` (``ROOT``):

- ``ROOT/config.yaml``: the full resolved config of the run;
- ``ROOT/checkpoints/best.ckpt`` (highest val/spearman) and ``last.ckpt``: Lightning checkpoints, for
  resuming only. Run the same command again and the run resumes from ``last.ckpt`` (weights,
  optimizer, loop counters, random states and data order: bit-identical to an uninterrupted run on a
  CPU); ``--ckpt_path`` names another one;
- ``ROOT/selector/``: the release checkpoint (``TokenSelector.save_pretrained`` + model card),
  written when fit ends from the weights of the best validation epoch (``checkpoint.monitor``; the
  card names the epoch and reports that epoch's metrics), or the final weights with
  ``--release.weights last`` or when there is no validation (``release.dirpath`` moves it; a folder
  outside ROOT that already exists is replaced only with ``--release.overwrite true``);
- ``ROOT/lightning_logs/version_N/``: metrics and hyperparameters.

A run holds a lock on ROOT (and on an outside release folder): a second job on them stops at once.
"""

from __future__ import annotations

import os
import pickle
import shlex
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from .datamodule import TraceDataModule
from .module import SelectorModule

__all__ = ["ReleaseCheckpoint", "RunCheckpoint", "TrainCLI", "main", "train_config"]


class ReleaseCheckpoint(Callback):
    """At the end of fit, write the release folder (config.json, model.safetensors, README.md).

    By default the released weights are the best validation epoch's (the run's ``best.ckpt``, chosen by
    ``checkpoint.monitor``), not the last epoch's: a selector that overfits late is not shipped in its
    overfitted state. The model card reports the metrics of the epoch whose weights it ships.
    """

    command: str | None = None
    """The `tokenrelay train` command line of this process, for the model card (set by ``main``)."""

    def __init__(self, dirpath: str | None = None, overwrite: bool = False, weights: str = "best"):
        """
        Args:
            dirpath: Release folder (null: ROOT/selector, ROOT being trainer.default_root_dir).
            overwrite: Replace a release folder outside ROOT that already exists (else the run refuses to start).
            weights: best (the best validation epoch by checkpoint.monitor; the last epoch when there is
                no validation or no best checkpoint) or last (the final weights).
        """
        if weights not in ("best", "last"):
            raise ValueError(f"release.weights must be 'best' or 'last', got {weights!r}")
        self.dirpath = dirpath
        self.overwrite = overwrite
        self.weights = weights
        self.history: dict[int, dict[str, float]] = {}
        """Validation metrics per epoch (kept in resume checkpoints), for the card of the released epoch."""
        self.best_fallback: dict = {}
        """A novelty fallback head's best epoch by its own validation metric: epoch, metric, score, weights."""

    def release_dir(self, trainer: Trainer) -> Path:
        return Path(self.dirpath) if self.dirpath else Path(trainer.default_root_dir) / "selector"

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.history[int(trainer.current_epoch)] = metrics
        fallback = getattr(pl_module, "net", None) and pl_module.net.fallback
        if fallback is not None:
            self._track_fallback(trainer, fallback, metrics)

    def _track_fallback(self, trainer: Trainer, fallback, metrics: dict[str, float]) -> None:
        """Keep the fallback head's weights of its best epoch by the monitor's fallback twin
        (val/gain@0.25 -> val/fallback/gain@0.25), else by its validation loss: it is a model of its
        own, and its best epoch is rarely the main head's."""
        callback = trainer.checkpoint_callback
        monitor = str(getattr(callback, "monitor", None) or "")
        twin = monitor.replace("val/", "val/fallback/", 1)
        name, mode = (
            (twin, getattr(callback, "mode", "max")) if twin in metrics else ("val/fallback/loss", "min")
        )
        if name not in metrics:
            return
        score, best = metrics[name], self.best_fallback.get("score")
        if best is None or (score > best if mode == "max" else score < best):
            self.best_fallback = {
                "epoch": int(trainer.current_epoch),
                "metric": name,
                "score": score,
                "state": {k: v.detach().clone().cpu() for k, v in fallback.state_dict().items()},
            }

    def state_dict(self) -> dict:
        return {"history": {str(k): v for k, v in self.history.items()}, "best_fallback": self.best_fallback}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = {int(k): dict(v) for k, v in state_dict.get("history", {}).items()}
        self.best_fallback = dict(state_dict.get("best_fallback") or {})

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not (
            trainer.is_global_zero
            and isinstance(pl_module, SelectorModule)
            and pl_module.selector is not None
        ):
            return
        card = pl_module.card_info()
        if self.command:
            card["command"] = self.command
        best = self._best_checkpoint(trainer)
        if best is None:
            card["released_weights"] = f"last epoch ({trainer.current_epoch})"
            _fit_novelty(pl_module, card, self.best_fallback if self.weights == "best" else None)
            path = pl_module.selector.save_pretrained(self.release_dir(trainer), card=card)
        else:
            state, epoch, step, monitor, score = best
            current = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
            pl_module.load_state_dict(state, strict=False)
            try:
                if epoch in self.history:
                    card["metrics"] = {k.removeprefix("val/"): v for k, v in self.history[epoch].items()}
                card["released_weights"] = f"best epoch {epoch} by {monitor} = {score:.4f}"
                card["steps"] = step
                _fit_novelty(pl_module, card, self.best_fallback if self.weights == "best" else None)
                path = pl_module.selector.save_pretrained(self.release_dir(trainer), card=card)
            finally:
                pl_module.load_state_dict(current)
        print(f"selector checkpoint written to {path} ({card['released_weights']})")

    def _best_checkpoint(self, trainer: Trainer) -> tuple[dict, int, int, str, float] | None:
        """(state_dict, epoch, global step, monitor, score) of the best validation epoch, or None for the last weights."""
        import torch

        callback = trainer.checkpoint_callback
        if self.weights != "best" or not isinstance(callback, ModelCheckpoint) or not callback.monitor:
            return None
        path = callback.best_model_path
        if not path or not Path(path).is_file() or callback.best_model_score is None:
            return None
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)  # this run's own file
        missing = set(trainer.lightning_module.state_dict()) - set(checkpoint["state_dict"])
        trainable = {
            f"net.{k}" for k, p in trainer.lightning_module.net.named_parameters() if p.requires_grad
        }
        if missing & trainable:
            raise RuntimeError(f"{path} lacks trained weights {sorted(missing & trainable)[:3]}")
        score = float(callback.best_model_score)
        epoch, step = int(checkpoint["epoch"]), int(checkpoint["global_step"])
        return checkpoint["state_dict"], epoch, step, str(callback.monitor), score


def _fit_novelty(pl_module: SelectorModule, card: dict, best_fallback: dict | None = None) -> None:
    """Fit the released weights' novelty fallback (if the selector has one) and say so in the card;
    its head takes the weights of its own best epoch when one was tracked."""
    if pl_module.net is not None and pl_module.net.fallback is not None and best_fallback:
        pl_module.net.fallback.load_state_dict(best_fallback["state"])
        card["released_fallback_weights"] = (
            f"best epoch {best_fallback['epoch']} by {best_fallback['metric']} = {best_fallback['score']:.4f}"
        )
    info = pl_module.fit_novelty()
    if info is not None:
        card["novelty_fallback"] = info
        print(
            f"novelty fallback: threshold {info['threshold']:.3g} ({info['quantile']:g} quantile of "
            f"{info['traces_calibrated']} {info['calibrated_on']}; {info['components']} components)"
        )


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that writes to ROOT/checkpoints by default (not inside a logger version)."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")
        super().setup(trainer, pl_module, stage)

    # Lightning (2.6) refreshes last.ckpt only when a top-k checkpoint was saved at the same step: after
    # an epoch that did not improve the monitor, last.ckpt would stay at the best epoch and a resume
    # would silently restart from there. Both saving hooks refresh it after every epoch instead.
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        due = not self._should_skip_saving_checkpoint(trainer) and self._should_save_on_train_epoch_end(
            trainer
        )
        super().on_train_epoch_end(trainer, pl_module)
        self._refresh_last(trainer, due)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        due = not self._should_skip_saving_checkpoint(trainer) and not self._should_save_on_train_epoch_end(
            trainer
        )
        super().on_validation_end(trainer, pl_module)
        self._refresh_last(trainer, due)

    def _refresh_last(self, trainer: Trainer, due: bool) -> None:
        if due and self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


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
    """LightningCLI with the run's checkpoint and release callbacks configurable from YAML.

    ``guard_outputs`` (the `tokenrelay train` command): add ``--ckpt_path``, lock the run folder and
    an outside release folder, refuse an existing outside release folder without ``--release.overwrite``
    and resume from ROOT's ``last.ckpt`` when it exists, all before any data or model loads.
    """

    def __init__(self, *args, guard_outputs: bool = False, **kwargs):
        self.guard_outputs = guard_outputs
        self.ckpt_path: str | None = None
        self.locks: list = []
        try:
            super().__init__(*args, **kwargs)
        except BaseException:  # a refusal or a bad option after the locks were taken
            self.release_locks()
            raise

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
        if self.guard_outputs:
            parser.add_argument(
                "--ckpt_path",
                type=str | None,
                default=None,
                help="Resume from this Lightning checkpoint (default: ROOT's checkpoints/last.ckpt when it exists).",
            )

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        if self.guard_outputs:  # before the seed is set (and logged) and anything is built
            self._guard()

    def _guard(self) -> None:
        from selector.cmdline import UsageError
        from selector.shards import OutputLock

        config = self.config
        sources = [config.data.data] if isinstance(config.data.data, str) else list(config.data.data)
        for source in sources:  # before any lock, folder or Trainer
            if not Path(source).expanduser().exists():
                raise UsageError(f"labelled traces {source!r} do not exist (--data.data)")
        root = Path(config.trainer.default_root_dir or os.getcwd())
        release = Path(config.release.dirpath) if config.release.dirpath else root / "selector"
        outside = not _inside(release, root)
        if not _is_launched_rank():  # DDP's other ranks re-run this command: rank 0 holds the locks
            self.locks.append(OutputLock(root, "the training run"))
            if outside:
                self.locks.append(OutputLock(release, "the release folder"))
        if outside and release.exists() and any(release.iterdir()) and not config.release.overwrite:
            raise UsageError(
                f"release folder {str(release)!r} already exists; pass --release.overwrite true to replace it, "
                "or choose another --release.dirpath"
            )
        self.ckpt_path = config.ckpt_path
        last = Path(config.checkpoint.dirpath or root / "checkpoints") / "last.ckpt"
        if self.ckpt_path is None and last.is_file():
            self.ckpt_path = str(last)
            print(
                f"resuming the run in {str(root)!r} from {last} (a fresh run needs another "
                "--trainer.default_root_dir)",
                file=sys.stderr,
            )
        elif self.ckpt_path is not None and not Path(self.ckpt_path).is_file():
            raise UsageError(f"--ckpt_path {self.ckpt_path!r} does not exist")

    def release_locks(self) -> None:
        for lock in self.locks:
            lock.release()
        self.locks = []


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _is_launched_rank() -> bool:
    """A process that a distributed launcher started for a rank other than 0 of its node, or on another node."""
    return any(int(os.environ.get(name) or 0) != 0 for name in ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK"))


def _cli(args: list[str], guard_outputs: bool = False) -> TrainCLI:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*args parameter is intended to run from within Python.*")
        return TrainCLI(
            SelectorModule,
            TraceDataModule,
            args=args,
            run=False,
            save_config_callback=RunConfig,
            seed_everything_default=0,
            parser_kwargs={"prog": "tokenrelay train", "description": DESCRIPTION},
            guard_outputs=guard_outputs,
        )


def train_config(path: str | os.PathLike) -> TrainCLI:
    """Instantiate model, data and trainer from a YAML without training (configs test)."""
    return _cli(["--config", str(path)])


DESCRIPTION = "Train a TokenRelay selector on labelled traces (Lightning) and release its checkpoint folder."

SHORT_HELP = f"""usage: tokenrelay train --config FILE.yaml [--section.option VALUE ...]

{DESCRIPTION}

Run the same command again and it resumes from the run's last checkpoint (bit-identical on a CPU).

main options (any key of the YAML can be given as --section.option):
  --config FILE                YAML with every option (configs/train.yaml, configs/train_encoder.yaml)
  --data.data PATH             labelled traces (`tokenrelay label` output, save_to_disk folder, JSONL/Parquet)
  --data.small_model PATH      the small model whose tokenizer cuts token spans (default: the traces' model)
  --data.batch_size N          traces per batch
  --model.scorer.backbone B    hidden (small-model hidden states) or encoder (LoRA-tuned text encoder)
  --model.scorer.head H        mlp or transformer; --model.scorer.d_model N sets its width
  --model.loss L               listwise, pairwise, bce_top_q or pointwise (with model.scorer.min_score 0)
  --model.scorer.novelty_fallback F
                               nothing, selfinfo or scalars: what a trace unlike the training ones gets
  --model.lr LR                AdamW learning rate
  --trainer.default_root_dir D the run folder: config.yaml, checkpoints/, selector/ (release), logs
  --trainer.max_epochs N       epochs to train
  --trainer.accelerator A      cpu, gpu, auto; --trainer.devices N (several: DDP)
  --release.dirpath D          the release folder (default: ROOT/selector)
  --release.overwrite true     replace a release folder outside ROOT that already exists
  --release.weights last       release the final weights (default: the best validation epoch's)
  --ckpt_path CKPT             resume from this checkpoint instead of ROOT/checkpoints/last.ckpt
  --seed_everything N          the run's seed (default 0)

tokenrelay train --help-all    every option, Lightning's Trainer and callbacks included
"""


def _resume_error(err: RuntimeError, ckpt: str | None) -> str | None:
    """One line for a checkpoint that does not fit the model being trained (a changed config)."""
    text = str(err)
    if ckpt and ("Error(s) in loading state_dict" in text or "size mismatch" in text):
        detail = next(
            (ln.strip() for ln in text.splitlines() if "size mismatch" in ln or "Missing" in ln), ""
        )
        return (
            f"cannot resume from {ckpt}: its weights do not fit the model this config builds ({detail[:160]}); "
            "train a changed model in a new --trainer.default_root_dir"
        )
    return None


def main(argv: Sequence[str]) -> int:
    """``tokenrelay train [--config FILE] [overrides] [--ckpt_path CKPT]``: fit, resumably, then release."""
    from selector.cmdline import UsageError, run_command

    argv = list(argv)
    if any(a in ("-h", "--help") for a in argv) or not argv:
        print(SHORT_HELP, end="", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if "--help-all" in argv:
        argv = [a if a != "--help-all" else "--help" for a in argv]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", message=r".*tensorboardX.*")  # Lightning's note on its default logger
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")  # Lightning-internal deprecation
    ReleaseCheckpoint.command = shlex.join(["tokenrelay", "train", *argv])

    def body() -> None:
        cli = _cli(argv, guard_outputs=True)
        try:  # weights_only: a checkpoint is never unpickled (it may come from anywhere)
            cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.ckpt_path, weights_only=True)
        except pickle.UnpicklingError as err:
            raise UsageError(
                f"refusing to load {cli.ckpt_path}: it holds Python objects besides tensors and plain values, "
                "and loading it would run code (only checkpoints that `tokenrelay train` writes resume)"
            ) from err
        except RuntimeError as err:
            message = _resume_error(err, cli.ckpt_path)
            if message is None:
                raise
            raise UsageError(message) from err
        finally:
            cli.release_locks()

    try:
        return run_command(body, "tokenrelay train")
    finally:  # a TrainCLI built later in this process (the ablations) must not inherit this command line
        ReleaseCheckpoint.command = None
