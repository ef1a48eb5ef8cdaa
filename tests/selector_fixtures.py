"""Helpers for selector tests: a tiny BERT encoder built in-process and synthetic labelled traces."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from tests.tiny_models import CORPUS

_SENTENCE = "we add the numbers then take half so each box holds apples and pears left over total"
WORDS = _SENTENCE.split()
KEY_WORDS = ["carry", "remainder"]


def make_tiny_bert(out: Path, seed: int = 0) -> Path:
    """Save a random 2-layer BERT with a WordPiece tokenizer (fast, with offsets) to ``out``."""
    torch.manual_seed(seed)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    trainer = trainers.WordPieceTrainer(vocab_size=300, special_tokens=special)
    tok.train_from_iterator([*CORPUS, " ".join(WORDS + KEY_WORDS)] * 10, trainer)
    tok.post_processor = processors.BertProcessing(
        ("[SEP]", tok.token_to_id("[SEP]")), ("[CLS]", tok.token_to_id("[CLS]"))
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    config = BertConfig(
        vocab_size=len(fast),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    out = Path(out)
    BertModel(config).save_pretrained(out)
    fast.save_pretrained(out)
    return out


def synthetic_records(
    tokenizer, n: int, hidden: int = 16, seed: int = 0, model: str = "tiny-lm"
) -> list[dict]:
    """Labelled trace records (the label contract) whose unit labels depend on cheap features.

    A unit's label grows with how far its tokens' hidden states lean along a fixed direction (a
    continuous "key" strength) and jumps when it has a digit; plus small noise. A good selector
    recovers the order.
    """
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    direction = torch.randn(hidden, generator=torch.Generator().manual_seed(1234))
    direction = direction / direction.norm()
    records = []
    for t in range(n):
        sentences, key = [], []
        for _ in range(rng.randint(4, 9)):
            words = rng.sample(WORDS, rng.randint(3, 6))
            if rng.random() < 0.4:
                words.insert(rng.randrange(len(words)), str(rng.randint(2, 99)))
            sentences.append(" ".join(words).capitalize() + ".")
            key.append(rng.random())
        reasoning = " ".join(sentences)
        ids = tokenizer(reasoning, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids, skip_special_tokens=True) == reasoning
        starts, ends, pos = [], [], 0
        for s in sentences:
            starts.append(pos)
            ends.append(pos + len(s))
            pos += len(s) + 1
        # token -> unit by character offsets, to put the "key" signal into the hidden states
        offsets = tokenizer(reasoning, add_special_tokens=False, return_offsets_mapping=True)[
            "offset_mapping"
        ]
        states = torch.randn(len(ids), hidden, generator=gen)
        labels = []
        for u, (s, e) in enumerate(zip(starts, ends)):
            rows = [k for k, (a, b) in enumerate(offsets) if a < e and b > s]
            states[rows] += 3.0 * key[u] * direction
            has_digit = any(c.isdigit() for c in sentences[u])
            labels.append(key[u] + 0.5 * has_digit + 0.02 * rng.gauss(0, 1))
        records.append(
            {
                "id": f"t{seed}-{t}",
                "question": f"How many apples are left in case {t}?",
                "answer": "3",
                "reasoning": reasoning,
                "reasoning_token_ids": ids,
                "reasoning_logprobs": [-abs(rng.gauss(0, 1.5)) for _ in ids],
                "model": model,
                "hidden_states": states.tolist(),
                "granularity": "sentence",
                "unit_starts": starts,
                "unit_ends": ends,
                "unit_token_counts": [max(1, (e - s) // 4) for s, e in zip(starts, ends)],
                "labels": labels,
                "f_all": -1.0 + sum(labels),
                "f_none": -1.0,
                "label_method": "synthetic",
                "fit_r2": None,
                "label_forward_passes": 0,
                "label_seconds": 0.0,
                "labeler_model": "tiny-large",
            }
        )
    return records
