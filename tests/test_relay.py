"""The relay on tiny real models: gates take their paths, budgets are exact, batching changes nothing."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from selector.agents import Agent, Generation
from selector.answers import answers_match
from selector.data import Example
from selector.gating import Gate, answer_from_generation, answer_probability, stated_answer_probability
from selector.prompts import transfer_prompt
from selector.relay import STAGES, Relay, RelayConfig
from selector.units import join_units, split_units, unit_token_counts

EXAMPLES = [Example(f"q{i}", f"What is {i} + {i + 1}?", str(2 * i + 1)) for i in range(4)]


@pytest.fixture(scope="module")
def small(tiny_lm_dir):
    return Agent.from_pretrained(tiny_lm_dir, device="cpu")


@pytest.fixture(scope="module")
def large(tiny_plain_lm_dir):
    """A plain (no chat template) model as the large one: both prompt styles are exercised."""
    return Agent.from_pretrained(tiny_plain_lm_dir, device="cpu")


def _relay(small, large, selector="selfinfo", **kw):
    kw = {"reason_tokens": 12, "answer_tokens": 4, "batch_size": 4, "granularity": "word", **kw}
    return Relay(small, large, selector, RelayConfig(**kw))


def test_gate_never_answers_directly_without_the_small_model(large):
    results = Relay(None, large, "selfinfo", RelayConfig(gate="never", answer_tokens=4)).run(
        EXAMPLES, progress=False
    )
    for r in results:
        assert r.path == "direct" and set(r.stages) == {"large_direct"}
        assert r.answer == r.direct_answer and r.reasoning is None and r.transfer_text is None
        assert 0 < r.direct_prob <= 1
        assert r.latency_s == pytest.approx(r.stages["large_direct"].seconds)
        assert r.correct is not None and r.leaked is False


def test_gate_always_transfers_without_a_direct_answer(small, large):
    for r in _relay(small, large, gate="always").run(EXAMPLES, progress=False):
        assert r.path == "transfer" and "large_direct" not in r.stages and r.direct_answer is None
        assert set(r.stages) == {"small_reasoning", "selection", "large_prefill", "large_decode"}
        assert r.reasoning is not None and r.transfer_text is not None
        assert r.latency_s == pytest.approx(sum(s.seconds for s in r.stages.values()))


def test_gate_confidence_transfers_below_tau_and_runs_small_only_then(small, large):
    probs = sorted(r.direct_prob for r in _relay(small, large, gate="never").run(EXAMPLES, progress=False))
    tau = (probs[1] + probs[2]) / 2  # two questions under tau, two over
    results = _relay(small, large, gate="confidence", tau=tau).run(EXAMPLES, progress=False)
    assert sum(r.path == "transfer" for r in results) == 2
    for r in results:
        assert r.path == ("transfer" if r.direct_prob < tau else "direct")
        assert ("small_reasoning" in r.stages) == (r.path == "transfer")
    # Parallel accounting: the small model runs for all; a confident question does not wait for it.
    par = _relay(small, large, gate="confidence", tau=tau, parallel=True).run(EXAMPLES, progress=False)
    assert [r.path for r in par] == [r.path for r in results]
    for r in par:
        assert "small_reasoning" in r.stages
        s = {k: r.stages[k].seconds if k in r.stages else 0.0 for k in STAGES}
        if r.path == "direct":
            assert r.latency_s == pytest.approx(s["large_direct"])
        else:
            tail = s["selection"] + s["large_prefill"] + s["large_decode"]
            assert r.latency_s == pytest.approx(max(s["large_direct"], s["small_reasoning"]) + tail)


def test_gate_agreement_transfers_exactly_on_disagreement(small, large):
    results = _relay(small, large, gate="agreement").run(EXAMPLES, progress=False)
    for r in results:
        assert "small_reasoning" in r.stages and "large_direct" in r.stages
        disagree = (
            r.small_answer is None
            or r.direct_answer is None
            or not answers_match(r.small_answer, r.direct_answer)
        )
        assert r.path == ("transfer" if disagree else "direct")


def test_gate_small_confidence_transfers_when_the_small_model_is_sure(small, large):
    always = _relay(small, large, gate="always").run(EXAMPLES, progress=False)
    for r in always:  # every relay reports how sure the small model was of its stated answer
        assert r.small_prob is None if r.small_answer is None else 0 < r.small_prob <= 1
    probs = sorted(r.small_prob or 0.0 for r in always)
    tau = (probs[1] + probs[2]) / 2  # two over tau, two under
    results = _relay(small, large, gate="small_confidence", small_tau=tau).run(EXAMPLES, progress=False)
    for r, a in zip(results, always):
        assert "small_reasoning" in r.stages and "large_direct" in r.stages
        assert r.small_prob == a.small_prob
        sure = r.small_prob is not None and r.small_prob >= tau
        assert r.path == ("transfer" if sure else "direct")
        if sure:  # the same transfer and answer as always transferring
            assert (r.transfer_text, r.answer) == (a.transfer_text, a.answer)
        else:
            assert r.answer == r.direct_answer and r.transfer_text is None
    assert sum(r.path == "transfer" for r in results) == sum(p >= tau for p in probs) == 2


def test_stated_answer_probability_reads_the_least_sure_statement(small):
    tok = small.tokenizer
    pieces = ["So x = ", "15", ", and 2x = ", "30", ". Answer: ", "15"]
    ids, lps = [], []
    for piece, lp in zip(pieces, [-0.1, -0.7, -0.1, -0.1, -0.1, -0.01]):
        piece_ids = tok(piece, add_special_tokens=False)["input_ids"]
        ids += piece_ids
        lps += [lp] * len(piece_ids)
    assert tok.decode(ids) == "".join(pieces)
    # "15" is stated twice: first at -0.7 a token, then copied at -0.01; the least sure one counts.
    assert stated_answer_probability(tok, ids, lps, "15") == pytest.approx(math.exp(-0.7))
    assert stated_answer_probability(tok, ids, lps, "30") == pytest.approx(math.exp(-0.1))
    assert stated_answer_probability(tok, ids, lps, "5") is None  # only inside 15: never stated
    assert stated_answer_probability(tok, ids, lps, None) is None
    assert stated_answer_probability(tok, [], [], "15") is None


def test_the_small_models_answer_line_is_not_transferred(small, large):
    text = "2 + 3 = 5, so the sum is 5.\nAnswer: 5"
    ids = small.tokenizer(text, add_special_tokens=False)["input_ids"]
    gen = Generation(text, ids, [-0.5] * len(ids), "stop", 9, len(ids), 0.1, 0.1)
    ex = Example("q", "What is 2 + 3?", "5")
    transfer = _relay(small, large, "full").select(ex, gen)[0]
    assert transfer.text.strip() == "2 + 3 = 5, so the sum is 5." and "Answer" not in transfer.text
    kept = _relay(small, large, "full", keep_answer_line=True).select(ex, gen)[0]
    assert kept.text.strip() == text


def test_gate_decisions():
    assert Gate("agreement").transfer("5", 0.9, "five") is True
    assert Gate("agreement").transfer("5", 0.1, "5.0") is False
    assert Gate("agreement").transfer("5", 0.9, None) is True
    assert Gate("confidence", tau=0.5).transfer("5", 0.49, None) is True
    assert Gate("confidence", tau=0.5).transfer("5", 0.5, None) is False
    assert Gate("never").transfer(None, None, None) is False and Gate("always").transfer(None, None, None)
    sure = Gate("small_confidence", small_tau=0.8)
    assert sure.transfer("5", 0.9, "7", 0.8) is True and sure.transfer("5", 0.9, "7", 0.79) is False
    assert sure.transfer("5", 0.9, None, None) is False and sure.transfer("5", 0.9, "7", None) is False
    assert sure.needs_direct and sure.small_for_all
    for kind, tau in (("sometimes", 0.5), ("confidence", 1.5), ("confidence", -0.1)):
        with pytest.raises(ValueError):
            Gate(kind, tau)
    for small_tau in (1.5, -0.1, True):
        with pytest.raises(ValueError, match="small_tau"):
            Gate("small_confidence", small_tau=small_tau)


def test_answer_from_generation_and_its_probability(large):
    assert answer_from_generation(" 42\nbecause") == "42"
    assert answer_from_generation("\n The answer is 7.") == "7"
    assert answer_from_generation("   ") is None
    tok = large.tokenizer
    ids = tok(" 5\nAnswer: 9", add_special_tokens=False)["input_ids"]
    first_line = len(tok(" 5\n", add_special_tokens=False)["input_ids"])
    lps = [-0.5] * first_line + [-9.0] * (len(ids) - first_line)
    assert answer_probability(tok, ids, lps) == pytest.approx(math.exp(-0.5))
    assert answer_probability(tok, [], []) is None


def test_budgets_give_exact_token_counts(small, large):
    """Selector 'first' at word granularity: the kept words are the greedy prefix under the cap."""
    for budget, kind in ((5, "tokens"), (0.5, "ratio"), (3, "topk")):
        results = _relay(
            small, large, "first", gate="always", budget=budget, budget_kind=kind, reason_tokens=20
        ).run(EXAMPLES[:2], progress=False)
        for r in results:
            units = split_units(r.reasoning, "word")
            counts = unit_token_counts(r.reasoning, units, large.tokenizer)
            cap = {"tokens": budget, "ratio": budget * sum(counts), "topk": None}[kind]
            keep, used = [], 0
            for i, c in enumerate(counts):
                if (cap is None and len(keep) < budget) or (cap is not None and used + c <= cap):
                    keep.append(i)
                    used += c
            assert r.transfer_tokens == used and r.reasoning_tokens == sum(counts)
            assert r.transfer_text == join_units(r.reasoning, units, keep)
            if cap is not None:
                assert r.transfer_tokens <= cap
            prompt = transfer_prompt(large, EXAMPLES[int(r.id[1:])].question, r.transfer_text).text
            assert r.stages["large_prefill"].prompt_tokens == len(
                large.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            )


def test_batch_equals_one_at_a_time(small, large):
    keys = (
        "answer",
        "path",
        "direct_answer",
        "reasoning",
        "small_answer",
        "transfer_text",
        "transfer_tokens",
    )
    batched = _relay(small, large, gate="agreement", batch_size=4, score_gold=True).run(
        EXAMPLES, progress=False
    )
    single = _relay(small, large, gate="agreement", batch_size=1, score_gold=True).run(
        EXAMPLES, progress=False
    )
    assert [r.id for r in batched] == [e.id for e in EXAMPLES]
    assert any(r.path == "transfer" for r in batched)  # every stage ran for some question
    for a, b in zip(batched, single):
        assert {k: getattr(a, k) for k in keys} == {k: getattr(b, k) for k in keys}
        assert a.gold_logprob == pytest.approx(b.gold_logprob, abs=1e-4)
        assert a.direct_prob == pytest.approx(b.direct_prob, rel=1e-4)
        if a.path == "transfer":  # batch 1 resumed from the direct prompt's cache; a batch of 4 did not
            assert a.stages["large_prefill"].cached_tokens == 0
            assert 0 < b.stages["large_prefill"].cached_tokens < b.stages["large_prefill"].prompt_tokens


def test_resuming_from_the_direct_prompt_changes_no_answer(small, large):
    """``reuse_prompt`` off prefills every final prompt whole: the same answers and gold log-probs."""
    runs = [
        _relay(small, large, gate="agreement", batch_size=1, score_gold=True, reuse_prompt=reuse).run(
            EXAMPLES, progress=False
        )
        for reuse in (True, False)
    ]
    assert any(r.path == "transfer" for r in runs[0])
    for on, off in zip(*runs):
        assert (on.answer, on.path, on.transfer_text) == (off.answer, off.path, off.transfer_text)
        assert on.gold_logprob == pytest.approx(off.gold_logprob, abs=1e-4)
        if on.path == "transfer":
            assert on.stages["large_prefill"].cached_tokens > 0 == off.stages["large_prefill"].cached_tokens


def test_relay_on_a_vision_language_model(tiny_vlm_dir, tmp_path):
    vlm = Agent.from_pretrained(tiny_vlm_dir, device="cpu")
    path = tmp_path / "red.png"
    Image.new("RGB", (32, 32), (255, 0, 0)).save(path)
    examples = [
        Example("v0", "What color is the image?", "red", images=[str(path)]),
        Example("v1", "What color is the image?", "blue", images=[Image.new("RGB", (32, 32), (0, 0, 255))]),
    ]
    relay = _relay(vlm, vlm, gate="always", batch_size=2, score_gold=True, reason_tokens=6)
    results = relay.run(examples, progress=False)
    assert all(r.path == "transfer" and r.gold_logprob is not None for r in results)
    assert results[0].stages["large_prefill"].prompt_tokens > 20  # image tokens are in the prompt
    single = [relay.run([ex], progress=False)[0] for ex in examples]
    assert [r.answer for r in single] == [r.answer for r in results]
    missing = Example("v2", "What color?", "red", images=[str(tmp_path / "nope.png")])
    with pytest.raises(FileNotFoundError, match="nope.png"):
        relay.run([missing], progress=False)


def test_text_only_models_refuse_image_questions(small, large, tmp_path):
    path = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(path)
    with pytest.raises(ValueError, match="text-only"):
        _relay(small, large, gate="always").run([Example("i", "q?", "a", images=[str(path)])], progress=False)


@pytest.mark.parametrize(
    "kw",
    [{"budget": 0}, {"budget": 1.5}, {"budget": -1, "budget_kind": "topk"}, {"budget": 1.2, "budget_kind": "threshold"},
     {"gate": "sometimes"}, {"selector": "bogus"}, {"tau": 2.0}, {"small_tau": -0.5}, {"granularity": "paragraph"}, {"reason_tokens": 0}],
)  # fmt: skip
def test_bad_relay_config_fails_before_any_model_loads(kw):
    with pytest.raises(ValueError):
        RelayConfig(small="no/such/small", large="no/such/large", **kw)


def test_models_required_by_the_gate(large):
    with pytest.raises(ValueError, match="needs a small model"):
        Relay(None, large, "selfinfo", RelayConfig(gate="agreement"))
    with pytest.raises(ValueError, match="needs a large model"):
        Relay.from_config(RelayConfig(small="x"))


def test_a_batch_one_relay_streams_an_image_question_for_a_hidden_selector(
    tiny_vlm_dir, tmp_path, one_thread
):
    """A vision-language small model and a selector reading its hidden states: the batch-1 relay streams (the
    states from its decoding steps, images in the prefill) and selects and answers as the batched relay does."""
    import torch

    from selector.scorer import ScorerConfig, TokenSelector

    vlm = Agent.from_pretrained(tiny_vlm_dir, device="cpu")
    text = getattr(vlm.model.config, "text_config", vlm.model.config)
    config = ScorerConfig(hidden_layer=-1, hidden_size=text.hidden_size, d_model=16, granularity="word",
                          small_vocab_size=len(vlm.tokenizer))  # fmt: skip
    torch.manual_seed(0)
    selector = TokenSelector(config).eval()
    path = tmp_path / "red.png"
    Image.new("RGB", (32, 32), (255, 0, 0)).save(path)
    ex = [Example("v0", "What color is the image?", "red", images=[str(path)])]
    kw = dict(gate="always", reason_tokens=8, budget=0.5, granularity="word")
    one = Relay(vlm, vlm, selector, RelayConfig(**kw, batch_size=1))
    assert one.streams
    got = one.run(ex, progress=False)[0]
    want = Relay(vlm, vlm, selector, RelayConfig(**kw, batch_size=2)).run(ex, progress=False)[0]
    assert (got.reasoning, got.transfer_text, got.answer) == (want.reasoning, want.transfer_text, want.answer)
