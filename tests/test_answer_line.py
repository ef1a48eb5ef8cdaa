"""The final answer line is cut from reasoning at a token boundary, for real-model styles too."""

from __future__ import annotations

import pytest
import torch

from selector.agents import Agent, Generation
from selector.data import Example
from selector.reasoning import answer_free_length
from selector.traces import strip_answer_from_trace, trace_record


@pytest.fixture(scope="module")
def tok(tiny_lm_dir):
    return Agent.from_pretrained(tiny_lm_dir, device="cpu").tokenizer


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("First, b = 2. So c = 2 + 3 = 5.\nAnswer: 5", "First, b = 2. So c = 2 + 3 = 5."),
        ("3 * 4 = 12\n12 + 1 = 13\n\n**Final Answer:** 13\n", "3 * 4 = 12\n12 + 1 = 13\n"),
        ("Add them: 7 + 8 = 15.\nThe answer is 15.", "Add them: 7 + 8 = 15."),
        ("Answer: 5", ""),
    ],
)
def test_answer_line_is_cut_at_a_token_boundary(tok, text, kept):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    k, cut = answer_free_length(tok, ids, text)
    assert cut == tok.decode(ids[:k]) and text.startswith(cut)
    assert cut.rstrip() == kept.rstrip()
    assert answer_free_length(tok, ids[:k], cut) == (k, cut)  # nothing left to cut


@pytest.mark.parametrize(
    "text",
    [
        "Answer: first we add.\n2 + 3 = 5",  # an answer line that is not the last line is reasoning
        "The legs: 4 * 3 = 12 and 2 * 2 = 4, so 16 legs.",
        "",
    ],
)
def test_reasoning_without_a_final_answer_line_is_kept_whole(tok, text):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert answer_free_length(tok, ids, text) == (len(ids), text)


def test_answer_free_length_refuses_text_that_is_not_the_ids_decoding(tok):
    ids = tok("2 + 3 = 5", add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match="not the decoding"):
        answer_free_length(tok, ids, "2 + 3 = 5\nAnswer: 5")


def test_trace_record_moves_the_answer_line_and_keeps_signals_aligned(tok):
    text = "So c = 2 + 3 = 5.\nAnswer: 5"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    n = len(ids)
    gen = Generation(
        text=text,
        token_ids=ids,
        logprobs=[-0.5] * n,
        finish_reason="stop",
        prompt_tokens=7,
        new_tokens=n,
        prefill_s=0.1,
        decode_s=0.2,
        hidden_states=torch.arange(n, dtype=torch.float32)[:, None],
    )
    example = Example(id="q1", question="c = 2 + 3?", answer="5")
    full = trace_record(example, "prompt", gen, "tiny", [])
    assert full["reasoning"] == text and "answer_line" not in full
    cut = trace_record(example, "prompt", gen, "tiny", [], tokenizer=tok)
    k = len(cut["reasoning_token_ids"])
    assert 0 < k < n and cut["reasoning"] == tok.decode(ids[:k])
    assert cut["reasoning"] + cut["answer_line"] == text
    assert len(cut["reasoning_logprobs"]) == len(cut["hidden_states"]) == k
    assert cut["hidden_states"][-1].tolist() == [float(k - 1)]
    # The small model's own answer and what generation cost are unchanged.
    assert cut["small_answer"] == "5" and cut["small_correct"] is True and cut["new_tokens"] == n
    assert strip_answer_from_trace(cut, tok) == cut  # idempotent
