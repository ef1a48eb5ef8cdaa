"""Shared fixtures: tiny real models saved once per session and loaded through from_pretrained."""

from __future__ import annotations

import json
import os

import pytest

from tests.tiny_models import make_causal_lm, make_vlm

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory):
    """A tiny Llama-style chat model (ChatML template)."""
    return make_causal_lm(tmp_path_factory.mktemp("models") / "tiny-lm")


@pytest.fixture(scope="session")
def tiny_plain_lm_dir(tmp_path_factory):
    """A tiny causal LM whose tokenizer has no chat template (plain prompts)."""
    return make_causal_lm(tmp_path_factory.mktemp("models") / "tiny-plain-lm", chat_template=False, seed=1)


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory):
    """A tiny LLaVA-style vision-language model."""
    return make_vlm(tmp_path_factory.mktemp("models") / "tiny-vlm")


@pytest.fixture()
def arithmetic_jsonl(tmp_path):
    """Five small text examples as JSONL."""
    rows = [
        {"id": f"q{i}", "question": f"What is {i} + {i + 1}?", "answer": str(2 * i + 1)} for i in range(5)
    ]
    path = tmp_path / "examples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def one_thread():
    """Tiny models on a shared 2-core machine: extra torch threads only contend (up to 10x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def small_tok(tiny_lm_dir):
    """The tiny chat model's tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_lm_dir)
