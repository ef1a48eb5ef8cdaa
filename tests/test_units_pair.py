"""Units are the same in labeling and in the relay, whatever the pair's tokenizers."""

from __future__ import annotations

from selector.agents import Agent
from selector.reasoning import view_from_generation
from selector.shards import ShardWriter, read_records
from selector.units import split_units
from tests.tiny_models import CORPUS, build_tokenizer
from training.label_job import LabelConfig, run_label


def test_token_units_match_between_labeling_and_the_relay_with_two_tokenizers(
    tmp_path, tiny_lm_dir, one_thread
):
    # The small model's tokenizer has no merges (one token per byte); the large one's has many.
    small_dir = tmp_path / "small-tokenizer"
    small_tok = build_tokenizer(vocab_size=262)
    small_tok.save_pretrained(small_dir)
    large = Agent.from_pretrained(tiny_lm_dir, device="cpu")
    records = []
    for k, reasoning in enumerate(CORPUS[:2]):
        ids = small_tok(reasoning, add_special_tokens=False)["input_ids"]
        records.append(
            {
                "id": f"t{k}",
                "question": "What is 2 + 3?",
                "answer": "5",
                "images": [],
                "choices": None,
                "reasoning": reasoning,
                "reasoning_token_ids": ids,
                "reasoning_logprobs": [-0.5] * len(ids),
                "model": str(small_dir),
            }
        )
    ShardWriter(tmp_path / "traces").write(records)
    out = tmp_path / "labels"
    run_label(
        LabelConfig(
            traces=str(tmp_path / "traces"), model=str(tiny_lm_dir), out=str(out), method="solo",
            units="token", accelerator="cpu", devices=1, progress_bar=False,
        ),
        agent=large,
    )  # fmt: skip
    for rec in read_records(out).to_list():
        labelled = list(zip(rec["unit_starts"], rec["unit_ends"]))
        # what the relay's selector sees of the same reasoning, cut with the small model's tokenizer
        view = view_from_generation(
            rec["question"], rec["reasoning"], rec["reasoning_token_ids"], rec["reasoning_logprobs"],
            small_tok, granularity="token", keep_answer_line=True,
        )  # fmt: skip
        assert [(u.start, u.end) for u in view.units] == labelled
        assert len(rec["labels"]) == len(view.units)
        # the large model's tokenizer would have cut other units: the check can fail
        by_large = [(u.start, u.end) for u in split_units(rec["reasoning"], "token", large.tokenizer)]
        assert len(by_large) < len(labelled)
