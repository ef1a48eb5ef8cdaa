"""`tokenrelay train` resumes with the same command, bit-identical to an uninterrupted run (CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback
from safetensors.torch import load_file

from selector.cli import main as tokenrelay
from selector.shards import ShardWriter
from tests.selector_fixtures import synthetic_records

CONFIGS = Path(__file__).parent.parent / "configs"

pytestmark = pytest.mark.usefixtures("one_thread")


class InterruptMidEpoch(Callback):
    """Ctrl-C in the middle of epoch ``epoch`` (0-based): the last checkpoint is the previous epoch's."""

    def __init__(self, epoch: int = 2):
        self.epoch = epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == 1:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def labels(tmp_path_factory, small_tok, tiny_lm_dir):
    records = synthetic_records(small_tok, 24, hidden=32, model=str(tiny_lm_dir))
    path = tmp_path_factory.mktemp("resume") / "labels"
    ShardWriter(path).write(records)
    return path


def _command(data: Path, small: Path, root: Path) -> list[str]:
    return [
        "train", "--config", str(CONFIGS / "train.yaml"),
        "--data.data", str(data),
        "--data.small_model", str(small),
        "--data.batch_size", "8",
        "--trainer.default_root_dir", str(root),
        "--trainer.max_epochs", "4",
        "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
    ]  # fmt: skip


def test_train_resumes_bit_identical_with_the_same_command(tmp_path, labels, tiny_lm_dir, capsys):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert tokenrelay(_command(labels, tiny_lm_dir, straight)) == 0

    interrupt = [f"--trainer.callbacks+={__name__}.InterruptMidEpoch", "--trainer.callbacks.epoch=2"]
    assert tokenrelay(_command(labels, tiny_lm_dir, resumed) + interrupt) == 130
    assert not (resumed / "selector").exists()  # stopped in epoch 3 of 4, nothing released yet
    stopped = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert stopped["epoch"] == 1
    capsys.readouterr()

    assert tokenrelay(_command(labels, tiny_lm_dir, resumed)) == 0  # the same command
    assert "resuming the run" in capsys.readouterr().err
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3 and a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    moments = [
        (s["exp_avg"], t["exp_avg"])
        for s, t in zip(
            a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()
        )
    ]
    assert moments and all(torch.equal(x, y) for x, y in moments)
    first, second = (
        load_file(straight / "selector" / "model.safetensors"),
        load_file(resumed / "selector" / "model.safetensors"),
    )
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    # the resumed run started from the interrupted weights, so it did not merely retrain from scratch
    assert any(not torch.equal(stopped["state_dict"][k], b["state_dict"][k]) for k in b["state_dict"])
