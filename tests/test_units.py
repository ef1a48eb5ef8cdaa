"""Tests for selector.units: offsets, invariants, joining, token mapping."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from selector.units import (
    GRANULARITIES,
    Unit,
    assign_spans_to_units,
    join_units,
    split_units,
    token_spans,
    unit_token_counts,
)

CORPUS = [
    "The answer is 42. We add 3.5 and $1,200.50 to get the total.",
    "First, compute 12 * 4 = 48. Then subtract 6, e.g. 48 - 6 = 42!",
    "Mr. Smith has 5 apples; i.e. he has more than Mrs. Jones.",
    "Step 1: read the question.\nStep 2: solve it.\n\\boxed{42}",
]


@pytest.fixture(scope="module")
def bpe():
    """A tiny byte-level BPE (covers any unicode text), wrapped as a HF fast tokenizer."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(CORPUS * 3, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok)


@pytest.fixture(scope="module")
def wordpiece():
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[UNK]"], show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


FRAGMENTS = [
    "3.5", "$1,200.50", "e.g.", "i.e.", "Mr.", "Dr.", "1.", "...", "?!", "!", "?", ".", '."', ".)",
    " ", "  ", "\n", "\r\n", "\t", "\u2028", "\u00a0", "é", "中文", "😀", "word", "The", "42", "-7", ",",
    "\\boxed{1}", "**", "x12y",
]  # fmt: skip
texts = st.one_of(
    st.text(max_size=80),
    st.lists(st.sampled_from(FRAGMENTS), max_size=25).map("".join),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=15).map("".join),
)
PROPS = settings(max_examples=200, deadline=None)


def check_invariants(text: str, units: list[Unit], full_cover: bool = True) -> None:
    prev_end = 0
    for i, u in enumerate(units):
        assert u.index == i
        assert prev_end <= u.start < u.end <= len(text)
        assert text[u.start : u.end] == u.text
        assert not u.text[0].isspace() and not u.text[-1].isspace()
        prev_end = u.end
    if full_cover:
        covered = [0] * len(text)
        for u in units:
            for j in range(u.start, u.end):
                covered[j] += 1
        for ch, c in zip(text, covered):
            assert c == 1 or (ch.isspace() and c == 0), (ch, c)


# ----------------------------------------------------------------------------- sentence


def sentences(text: str) -> list[str]:
    return [u.text for u in split_units(text, "sentence")]


def test_sentence_basic_and_numbers():
    text = "We add 3.5 and $1,200.50 to get it. Then we stop!  Is it 42?\nYes"
    assert sentences(text) == ["We add 3.5 and $1,200.50 to get it.", "Then we stop!", "Is it 42?", "Yes"]


def test_sentence_abbreviations_are_not_ends():
    text = "Use a trick, e.g. factoring. Mr. Smith and Dr. Who agree, i.e. yes. Done."
    assert sentences(text) == [
        "Use a trick, e.g. factoring.",
        "Mr. Smith and Dr. Who agree, i.e. yes.",
        "Done.",
    ]


def test_sentence_closing_quotes_and_brackets_stay_with_sentence():
    text = 'He said "stop." Then (it ended.) Next?! ok...  end'
    assert sentences(text) == ['He said "stop."', "Then (it ended.)", "Next?!", "ok...", "end"]


def test_sentence_newlines_and_list_numbers():
    text = "1. Compute 5 + 3.\n2. The result is 8.\n\n  \nSo the answer is 8."
    assert sentences(text) == ["1. Compute 5 + 3.", "2. The result is 8.", "So the answer is 8."]
    # A number ending a sentence mid-line still ends it.
    assert sentences("The total is 5. Next we go.") == ["The total is 5.", "Next we go."]


def test_sentence_offsets():
    text = "  A b.  C d.\n"
    units = split_units(text)
    assert [(u.start, u.end) for u in units] == [(2, 6), (8, 12)]


def test_empty_and_whitespace_text():
    for g in ("word", "sentence"):
        assert split_units("", g) == []
        assert split_units(" \n\t ", g) == []


# ----------------------------------------------------------------------------- word / token


def test_word_units():
    text = "  Hello,  wörld!\n42 $1,200.50 "
    assert [u.text for u in split_units(text, "word")] == ["Hello,", "wörld!", "42", "$1,200.50"]


def test_token_units_need_tokenizer():
    with pytest.raises(ValueError, match="fast tokenizer"):
        split_units("hello", "token")


def test_unknown_granularity():
    with pytest.raises(ValueError, match="granularity"):
        split_units("hello", "paragraph")
    assert GRANULARITIES == ("token", "word", "sentence")


def test_token_units_trim_whitespace(bpe):
    text = "The answer is 42.\n\nWe add 3.5 😀"
    units = split_units(text, "token", tokenizer=bpe)
    check_invariants(text, units)
    assert "".join(u.text for u in units) == "".join(text.split())
    assert units[-1].text == "😀"  # four byte tokens of one char merge into one unit


def test_token_units_wordpiece(wordpiece):
    text = "The answer is 42. Zebra!"
    units = split_units(text, "token", tokenizer=wordpiece)
    check_invariants(text, units)


def test_token_spans_rejects_slow_tokenizer():
    class Slow:
        is_fast = False

    with pytest.raises(ValueError, match="not a fast tokenizer"):
        token_spans("x", Slow())


def test_token_spans_matches_tokenizer(bpe):
    text = "We add 3.5 and 1,200."
    spans = token_spans(text, bpe)
    assert len(spans) == len(bpe(text, add_special_tokens=False)["input_ids"])
    assert token_spans(text, bpe.backend_tokenizer) == spans  # raw `tokenizers` object too


# ----------------------------------------------------------------------------- assign / counts


def _units(*spans: tuple[int, int]) -> list[Unit]:
    return [Unit(i, s, e, "x" * (e - s)) for i, (s, e) in enumerate(spans)]


def test_assign_spans_most_overlap_ties_and_none():
    units = _units((0, 4), (5, 9), (10, 12))
    spans = [(0, 2), (3, 7), (2, 7), (4, 5), (9, 10), (8, 11), (11, 11), (20, 25)]
    # (3,7): 1 vs 2 -> unit 1; (2,7): 2 vs 2 tie -> first; (4,5),(9,10): gaps; (8,11): 1 vs 1 tie.
    assert assign_spans_to_units(spans, units) == [0, 1, 0, -1, -1, 1, -1, -1]
    assert assign_spans_to_units([(0, 3)], []) == [-1]


def test_unit_token_counts(bpe):
    text = "The answer is 42. We add 3.5 and 1,200.\nDone"
    units = split_units(text, "sentence")
    counts = unit_token_counts(text, units, bpe)
    spans = token_spans(text, bpe)
    assigned = assign_spans_to_units(spans, units)
    assert counts == [max(1, assigned.count(i)) for i in range(len(units))]
    assert sum(counts) <= len(spans)
    # A unit that gets no token still costs 1.
    assert unit_token_counts("ab", _units((0, 1), (1, 2)), _FakeTok([(0, 2)])) == [1, 1]


class _FakeTok:
    is_fast = True

    def __init__(self, offsets):
        self.offsets = offsets

    def __call__(self, text, **kwargs):
        return {"offset_mapping": self.offsets}


# ----------------------------------------------------------------------------- join


def test_join_all_none_and_gaps():
    text = "First step.  Second step.\nThird step. Fourth."
    units = split_units(text)
    assert join_units(text, units, [True] * 4) == text.strip()
    assert join_units(text, units, [False] * 4) == ""
    assert join_units(text, units, set()) == ""
    assert join_units(text, units, {0, 1}) == "First step.  Second step."
    assert join_units(text, units, {0, 2}) == "First step.\nThird step."  # gap holds a newline
    assert join_units(text, units, [0, 3]) == "First step.\nFourth."
    assert join_units(text, units, (3, 1)) == "Second step.\nFourth."  # original order


def test_join_words_never_break_words():
    text = "We add 3.5 and 1,200 here"
    units = split_units(text, "word")
    assert join_units(text, units, [True, False, True, False, True, True]) == "We 3.5 1,200 here"


def test_join_keep_validation():
    text = "a b c"
    units = split_units(text, "word")
    with pytest.raises(ValueError, match="mask"):
        join_units(text, units, [True, False])
    with pytest.raises(ValueError, match="out of range"):
        join_units(text, units, [5])
    with pytest.raises(ValueError):
        join_units(text, units, [True, 1])


def test_join_accepts_numpy_and_torch():
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    text = "a b c"
    units = split_units(text, "word")
    assert join_units(text, units, np.array([True, False, True])) == "a c"
    assert join_units(text, units, torch.tensor([True, False, True])) == "a c"
    assert join_units(text, units, np.array([2, 0])) == "a c"
    assert join_units(text, units, [np.bool_(True), np.bool_(False), np.bool_(False)]) == "a"


# ----------------------------------------------------------------------------- properties


@PROPS
@given(text=texts, granularity=st.sampled_from(["word", "sentence"]))
def test_units_invariants(text, granularity):
    units = split_units(text, granularity)
    check_invariants(text, units)
    assert join_units(text, units, [True] * len(units)) == text.strip()
    assert join_units(text, units, range(len(units))) == text.strip()


@PROPS
@given(text=texts)
def test_token_units_invariants(bpe, text):
    units = split_units(text, "token", tokenizer=bpe)
    check_invariants(text, units)
    assert join_units(text, units, [True] * len(units)) == text.strip()
    counts = unit_token_counts(text, units, bpe)
    assert len(counts) == len(units) and all(c >= 1 for c in counts)
    assert sum(counts) <= len(token_spans(text, bpe))


@PROPS
@given(text=texts, data=st.data())
def test_join_subset_properties(text, data):
    units = split_units(text, "sentence")
    mask = data.draw(st.lists(st.booleans(), min_size=len(units), max_size=len(units)))
    joined = join_units(text, units, mask)
    kept = [u.text for u, k in zip(units, mask) if k]
    assert joined == join_units(text, units, {i for i, k in enumerate(mask) if k})
    # Kept units appear in order and nothing else but separators is added.
    pos = 0
    for t in kept:
        found = joined.find(t, pos)
        assert found >= 0
        pos = found + len(t)
    assert len(joined) <= len(text.strip())
    if not kept:
        assert joined == ""
