"""Selector checkpoints through huggingface_hub's ModelHubMixin: the shipped ones load and score as
before, a release folder carries a hub ModelCard, a hub id that is not there is one clear error,
and push_to_hub uploads the release folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, ModelHubMixin
from safetensors.torch import load_file

from selector.reasoning import ReasoningView
from selector.scorer import CheckpointError, ScorerConfig, TokenSelector
from selector.units import split_units

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {
    # first three scores of each view (below), measured with the hand-written loader this replaced
    "checkpoints/demo/selector": [  # the release of the demo world with lookups (its own numbers)
        [-0.738701, 1.351546, -0.507038],
        [-0.586156, 1.453556, -0.368634],
        [-0.172502, 1.326672, -0.293053],
    ],
    "checkpoints/qwen2.5-coder-0.5b-to-1.5b-simple-eq": [
        [-2.0599, -1.044052, 2.497162],
        [-2.911687, 0.904633, 1.326503],
        [1.089061, -3.321764, -0.006987],
    ],
}


def _views(hidden_size: int) -> list[ReasoningView]:
    g = torch.Generator().manual_seed(0)
    out = []
    for k in range(3):
        reasoning = " ".join(f"Step {i}: x{i} = {i * (k + 2)} + {k}. So we add {i}." for i in range(1, 4 + k))
        spans = [m.span() for m in re.finditer(r"\S+", reasoning)]
        n = len(spans)
        out.append(
            ReasoningView(
                question=f"What is x{k}?",
                reasoning=reasoning,
                units=split_units(reasoning, "sentence"),
                token_ids=list(range(n)),
                token_logprobs=(-torch.rand(n, generator=g) * 3).tolist(),
                token_spans=spans,
                hidden_states=torch.randn(n, hidden_size, generator=g),
            )
        )
    return out


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_selectors_load_and_score_as_before(name):
    folder = ROOT / name
    loaded = TokenSelector.from_pretrained(folder)
    assert isinstance(loaded, ModelHubMixin)
    views = _views(loaded.config.hidden_size)
    scores = loaded.score_views(views)
    # the same numbers as a net built from config.json and its safetensors by hand, bit for bit
    raw = json.loads((folder / "config.json").read_text())
    reference = TokenSelector(ScorerConfig.from_dict(raw["scorer"]))
    reference.net.load_state_dict(load_file(folder / "model.safetensors"), strict=True)
    assert scores == reference.eval().score_views(views)
    assert loaded.card == raw["card"]
    # and the numbers the previous loader gave
    for got, want in zip(scores, SHIPPED[name]):
        assert got[:3] == pytest.approx(want, abs=1e-5)


def _tiny_selector() -> TokenSelector:
    torch.manual_seed(0)
    return TokenSelector(ScorerConfig(hidden_layer=-1, hidden_size=16, d_model=8, small_model="tiny-lm"))


def test_release_folder_has_a_hub_model_card_and_loads_from_a_string_path(tmp_path):
    selector = _tiny_selector()
    out = selector.save_pretrained(tmp_path / "sel", card={"data": "synthetic"})
    assert out == tmp_path / "sel"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "tokenrelay" and "tokenrelay" in card.data.tags
    assert "| training data | `synthetic` |" in card.text
    assert json.loads((out / "config.json").read_text())["format"] == "tokenrelay-selector/1"
    loaded = TokenSelector.from_pretrained(str(out))
    views = _views(16)
    assert loaded.score_views(views) == selector.eval().score_views(views)
    assert loaded.config == selector.config


def test_a_hub_id_that_is_not_there_or_a_file_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a local folder and the hub could not provide it"):
        TokenSelector.from_pretrained("nobody-here/no-such-selector", local_files_only=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a file; expected a folder"):
        TokenSelector.from_pretrained(tmp_path / "file")


def test_push_to_hub_uploads_the_release_folder(tmp_path, monkeypatch):
    """The hub is replaced by a recorder (this machine is offline); the selector's side is real."""
    import huggingface_hub.hub_mixin as hub_mixin

    uploads = []

    class Recorder:
        def __init__(self, token=None):
            self.token = token

        def create_repo(self, repo_id, private=None, exist_ok=False, **kwargs):
            return type("Repo", (), {"repo_id": repo_id})()

        def upload_folder(self, *, repo_id, folder_path, commit_message, **kwargs):
            files = sorted(p.name for p in Path(folder_path).iterdir())
            uploads.append(
                (repo_id, files, commit_message, json.loads((Path(folder_path) / "config.json").read_text()))
            )
            return f"https://hub.example/{repo_id}/commit/1"

    monkeypatch.setattr(hub_mixin, "HfApi", Recorder)
    selector = _tiny_selector()
    assert selector.push_to_hub("me/tiny-selector", private=True).endswith("/commit/1")
    (repo, files, message, config) = uploads[0]
    assert repo == "me/tiny-selector" and message == "Upload TokenRelay selector"
    assert files == ["README.md", "config.json", "model.safetensors"]
    assert config["scorer"]["hidden_size"] == 16
