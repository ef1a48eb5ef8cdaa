"""Agents: loading, prompt formatting, batched generation and prefix-reusing scoring."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from selector.agents import Agent
from selector.prompts import answer_target, reasoning_prompt, transfer_prompt


@pytest.fixture(scope="module")
def lm(tiny_lm_dir):
    return Agent.from_pretrained(tiny_lm_dir, device="cpu")


@pytest.fixture(scope="module")
def vlm(tiny_vlm_dir):
    return Agent.from_pretrained(tiny_vlm_dir, device="cpu")


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Agent.from_pretrained(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        Agent.from_pretrained(tmp_path)


def test_chat_template_when_present_plain_otherwise(lm, tiny_plain_lm_dir):
    assert lm.uses_chat_template
    assert lm.format_chat("hi").startswith("<|im_start|>user\nhi")
    plain = Agent.from_pretrained(tiny_plain_lm_dir, device="cpu")
    assert not plain.uses_chat_template
    assert plain.format_chat("hi", system="sys") == "<s>sys\n\nhi\n\n"


def test_batched_generation_equals_one_at_a_time(lm):
    prompts = [
        lm.format_chat("What is 2 + 3?"),
        lm.format_chat("Let x = 3 and y = x + 4. What is y times 2?"),
    ]
    batch = lm.generate(prompts, max_new_tokens=6, hidden_layer=-1)
    for prompt, got in zip(prompts, batch):
        alone = lm.generate([prompt], max_new_tokens=6, hidden_layer=-1)[0]
        assert got.token_ids == alone.token_ids
        assert got.logprobs == pytest.approx(alone.logprobs, abs=1e-4)
        assert torch.allclose(got.hidden_states, alone.hidden_states, atol=1e-4)
        assert got.prompt_tokens == alone.prompt_tokens
    g = batch[0]
    assert g.finish_reason in {"stop", "length"}
    assert g.new_tokens == len(g.token_ids) == len(g.logprobs)
    assert g.hidden_states.shape == (g.new_tokens, lm.model.config.hidden_size)
    assert all(lp <= 0 for lp in g.logprobs)
    assert g.prefill_s > 0 and g.decode_s >= 0


def test_hidden_states_of_earlier_text_equal_those_recorded_while_generating(lm):
    prompts = [lm.format_chat("What is 2 + 3?"), lm.format_chat("Let x = 3. What is x + 4?")]
    gens = lm.generate(prompts, max_new_tokens=6, hidden_layer=-1)
    later = lm.hidden_states_of(prompts, [g.token_ids for g in gens], layer=-1)
    for g, h in zip(gens, later):
        assert h.shape == g.hidden_states.shape
        assert torch.allclose(h, g.hidden_states, atol=1e-4)
    assert lm.hidden_states_of(prompts[:1], [[]], layer=-1)[0].shape == (0, lm.model.config.hidden_size)
    with pytest.raises(ValueError, match="2 prompts but 1 continuations"):
        lm.hidden_states_of(prompts, [[1]], layer=-1)
    with pytest.raises(ValueError, match="out of range"):
        lm.hidden_states_of(prompts[:1], [[1]], layer=99)


def test_answer_and_score_equals_generate_then_score(lm, monkeypatch):
    """One prefill serves the answer and the target's log-prob: the same numbers as two calls."""
    pairs = [
        (
            lm.format_chat("What is 2 + 3?").removesuffix("<|im_start|>assistant\n"),
            "<|im_start|>assistant\nAnswer:",
        ),
        (lm.format_chat("Let x = 3 and y = x + 4. What is y times 2?"), "Answer:"),
        (lm.format_chat("Say hello there")[:-30], lm.format_chat("Say hello there")[-30:]),
    ]
    whole, cut = lm.encode_text(pairs[2][0] + pairs[2][1]), lm.encode_text(pairs[2][0])
    assert not torch.equal(whole[: len(cut)], cut)  # the cut splits a token: scored the separate way
    targets = [" 5", " 14 and more", " 7"]
    separately = []
    real_score = lm.score
    monkeypatch.setattr(lm, "score", lambda p, t, **kw: separately.extend(p) or real_score(p, t, **kw))
    gens, scores = lm.answer_and_score(pairs, targets, max_new_tokens=5)
    monkeypatch.undo()
    assert separately == [pairs[2]]
    alone_gens = lm.generate([a + b for a, b in pairs], max_new_tokens=5)
    alone_scores = lm.score(pairs, targets, reuse_prefix=False)
    for g, a in zip(gens, alone_gens):
        assert g.token_ids == a.token_ids and g.text == a.text
    for s, a in zip(scores, alone_scores):
        assert s.logprob == pytest.approx(a.logprob, abs=1e-4)
        assert s.token_logprobs == pytest.approx(a.token_logprobs, abs=1e-4)
    _, single = lm.answer_and_score(pairs[1:2], targets[1:2], max_new_tokens=5)
    assert single[0].logprob == pytest.approx(alone_scores[1].logprob, abs=1e-4)
    with pytest.raises(ValueError, match="empty target"):
        lm.answer_and_score(pairs[:1], [""])


def test_generation_stops_at_length_and_records_it(lm):
    out = lm.generate([lm.format_chat("count")], max_new_tokens=3)[0]
    if out.finish_reason == "length":
        assert out.new_tokens == 3
    else:
        assert out.new_tokens < 3


def test_seeded_sampling_is_reproducible(lm):
    prompt = [lm.format_chat("Say something")]
    a = lm.generate(prompt, max_new_tokens=8, do_sample=True, seed=3)[0]
    b = lm.generate(prompt, max_new_tokens=8, do_sample=True, seed=3)[0]
    assert a.token_ids == b.token_ids


def _score_all_ways(agent, requests, target, images=None):
    one = [
        agent.score(
            [r], target, images=None if images is None else [images[0]], batch_size=1, reuse_prefix=False
        )[0]
        for r in requests
    ]
    imgs = None if images is None else images * len(requests)
    batched = agent.score(requests, target, images=imgs, batch_size=4, reuse_prefix=False)
    reused = agent.score(requests, target, images=imgs, batch_size=3, reuse_prefix=True)
    return one, batched, reused


def test_batched_and_prefix_reused_scores_equal_one_at_a_time(lm):
    variants = ["", "First, 2 + 3 = 5.", "So the answer is 5.", "x = 3 and y = 7. " * 3, "blue"] * 2
    requests = [transfer_prompt(lm, "What is 2 + 3?", v).as_pair() for v in variants]
    one, batched, reused = _score_all_ways(lm, requests, answer_target("5"))
    for a, b, c in zip(one, batched, reused):
        assert b.logprob == pytest.approx(a.logprob, abs=1e-4)
        assert c.logprob == pytest.approx(a.logprob, abs=1e-4)
        assert c.token_logprobs == pytest.approx(a.token_logprobs, abs=1e-4)
        assert a.target_tokens >= 1


def _tokens_fed(agent, fn):
    """Token positions run through the model while ``fn`` scores (the cost prefix sharing cuts)."""
    fed = [0]

    def hook(module, args, kwargs):
        fed[0] += kwargs["input_ids"].numel()

    handle = agent.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        return fn(), fed[0]
    finally:
        handle.remove()


@pytest.mark.parametrize("batch_size", [1, 3])
def test_prefix_tree_scoring_equals_one_at_a_time_and_encodes_shared_starts_once(lm, batch_size):
    text = "Let x be 2 and y be 3 , then x plus y is 5 so the sum is 5 ."
    words = text.split(" ")
    # leave-one-out variants (each shares everything before its dropped word with the full text),
    # the full text twice, nothing, and a text that is the start of another
    variants = [" ".join(words)] * 2 + [
        " ".join(w for j, w in enumerate(words) if j != i) for i in range(len(words))
    ]
    variants += ["", " ".join(words[:5])]
    requests = [transfer_prompt(lm, "What is x + y?", v).as_pair() for v in variants]
    target = answer_target("5")
    one, plain = _tokens_fed(
        lm, lambda: [lm.score([r], target, batch_size=1, reuse_prefix=False)[0] for r in requests]
    )
    tree, shared = _tokens_fed(lm, lambda: lm.score(requests, target, batch_size=batch_size))
    for a, b in zip(one, tree):
        assert b.logprob == pytest.approx(a.logprob, abs=1e-4)
        assert b.token_logprobs == pytest.approx(a.token_logprobs, abs=1e-4)
    assert shared < 0.6 * plain  # the question once, and each reasoning start once per branch


def test_vlm_scores_with_image_prefix_reuse(vlm):
    image = Image.new("RGB", (40, 40), "red")
    requests = [
        transfer_prompt(vlm, "What color?", v, images=[image]).as_pair() for v in ["", "red", "a red square"]
    ]
    one, batched, reused = _score_all_ways(vlm, requests, answer_target("red"), images=[[image]])
    for a, b, c in zip(one, batched, reused):
        assert b.logprob == pytest.approx(a.logprob, abs=1e-4)
        assert c.logprob == pytest.approx(a.logprob, abs=1e-4)


def test_vlm_generates_from_images(vlm, tmp_path):
    path = tmp_path / "blue.png"
    Image.new("RGB", (40, 40), "blue").save(path)
    prompt = reasoning_prompt(vlm, "What color?", images=[str(path)])
    assert "<image>" in prompt.text
    out = vlm.generate(
        [prompt.text, prompt.text], images=[[str(path)], [Image.new("RGB", (9, 9), "red")]], max_new_tokens=4
    )
    assert len(out) == 2 and all(o.new_tokens >= 1 for o in out)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        vlm.generate([prompt.text], images=[[str(tmp_path / "missing.png")]], max_new_tokens=2)


def test_image_to_text_only_model_is_an_error(lm):
    with pytest.raises(ValueError, match="text-only"):
        lm.format_chat("What color?", n_images=1)
    with pytest.raises(ValueError, match="text-only"):
        lm.generate(["x"], images=[[Image.new("RGB", (4, 4))]], max_new_tokens=1)


def test_transfer_prompt_shares_prefix_and_ends_with_answer_prefix(lm):
    direct = transfer_prompt(lm, "What is 2 + 3?", None)
    full = transfer_prompt(lm, "What is 2 + 3?", "2 + 3 = 5.")
    assert direct.prefix == full.prefix
    assert "2 + 3 = 5." in full.rest and "2 + 3 = 5." not in direct.text
    assert full.rest.endswith("Answer:") and direct.rest.endswith("Answer:")
    with pytest.raises(ValueError):
        answer_target("  ")


def test_half_precision_weights_warn_only_on_a_cpu_without_units_for_them(tiny_lm_dir, monkeypatch):
    import warnings

    import selector.agents as agents_module

    monkeypatch.setattr(agents_module, "_fast_on_this_cpu", lambda dtype: dtype == torch.float32)
    with pytest.warns(UserWarning, match="without torch.bfloat16 units"):
        agent = Agent.from_pretrained(tiny_lm_dir, device="cpu", dtype="bfloat16")
    assert agent.model.dtype == torch.bfloat16
    monkeypatch.setattr(agents_module, "_fast_on_this_cpu", lambda dtype: True)  # e.g. AVX512-BF16
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (
            Agent.from_pretrained(tiny_lm_dir, device="cpu", dtype="bfloat16").model.dtype == torch.bfloat16
        )


def test_a_prompt_resumes_from_an_earlier_prompts_cache(lm):
    """The answer from a transfer prompt resumes from the direct prompt's KV cache: the same tokens,
    log-probs and gold score as a full prefill, with only the differing rest prefilled."""
    question = "Let x = 3 and y = x + 4. What is y times 2?"
    direct = transfer_prompt(lm, question, None)
    hinted = transfer_prompt(lm, question, "y = 7. Then y times 2 is 14.")
    [first] = lm.generate([direct.text], max_new_tokens=4, keep_prompt=True)
    kept = first.prompt_cache
    n_direct = len(lm.encode_text(direct.text))
    assert kept is not None and kept.kv.get_seq_length() == n_direct == len(kept.ids)
    plain = lm.generate([hinted.text], max_new_tokens=6)[0]
    for prefix in (kept, type(kept)(text=direct.text)):  # the kept KV, or one computed on first use
        resumed = lm.generate([hinted.text], max_new_tokens=6, prefix=prefix)[0]
        assert resumed.token_ids == plain.token_ids and resumed.text == plain.text
        assert resumed.logprobs == pytest.approx(plain.logprobs, abs=1e-4)
        shared = len(lm.encode_text(direct.prefix))
        assert shared <= resumed.cached_tokens < n_direct and resumed.prompt_tokens == plain.prompt_tokens
    assert kept.kv.get_seq_length() == n_direct  # never mutated by a use
    gens, scores = lm.answer_and_score([hinted.as_pair()], [" 14"], max_new_tokens=6, prefix=kept)
    alone = lm.score([hinted.as_pair()], [" 14"], reuse_prefix=False)[0]
    assert gens[0].token_ids == plain.token_ids and scores[0].logprob == pytest.approx(
        alone.logprob, abs=1e-4
    )
    # A prompt that shares nothing, or a batch, ignores the prefix.
    other = lm.generate(["Say hello there"], max_new_tokens=3, prefix=kept)[0]
    assert other.cached_tokens == 0
    batch = lm.generate([hinted.text, direct.text], max_new_tokens=3, prefix=kept, keep_prompt=True)
    assert all(g.cached_tokens == 0 and g.prompt_cache is None for g in batch)


def test_the_hidden_states_forward_is_counted_in_the_decode_time(tiny_lm_dir, monkeypatch):
    """Hidden states asked of generate come from a second forward after decoding: its time is in decode_s
    (a latency that sums stage times must not miss it). A planted 0.3 s delay in that forward shows up."""
    import time

    agent = Agent.from_pretrained(tiny_lm_dir, device="cpu")
    prompt = [agent.format_chat("What is 2 + 3?")]
    plain = agent.generate(prompt, max_new_tokens=4)[0]
    real = agent._hidden_states

    def slow(*args, **kwargs):
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(agent, "_hidden_states", slow)
    timed = agent.generate(prompt, max_new_tokens=4, hidden_layer=-1)[0]
    assert timed.token_ids == plain.token_ids and timed.hidden_states is not None
    assert timed.decode_s >= 0.3 > plain.decode_s
    # ... and said apart, for a reading of the reasoning that needs no states (the small model's own answer)
    assert timed.hidden_s >= 0.3 and timed.decode_s - timed.hidden_s < 0.3 and plain.hidden_s == 0
