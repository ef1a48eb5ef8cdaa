"""The concurrent relay: the large direct answer and the small reasoning in two workers, same answers."""

from __future__ import annotations

import pytest
import torch

from selector.agents import Agent
from selector.data import Example
from selector.relay import Relay, RelayConfig
from tests.test_early_stop import make_cycle_lm

EXAMPLES = [Example(f"q{i}", f"What is {i} + {i + 1}?", str(2 * i + 1)) for i in range(4)]


@pytest.fixture(scope="module")
def small(tiny_lm_dir):
    return Agent.from_pretrained(tiny_lm_dir, device="cpu")


@pytest.fixture(scope="module")
def large(tiny_plain_lm_dir):
    return Agent.from_pretrained(tiny_plain_lm_dir, device="cpu")


def _run(small, large, **kw):
    kw = {
        "reason_tokens": 16,
        "answer_tokens": 4,
        "batch_size": 2,
        "granularity": "word",
        "score_gold": True,
        **kw,
    }
    return Relay(small, large, "selfinfo", RelayConfig(**kw)).run(EXAMPLES, progress=False)


def _same(a, b):
    for x, y in zip(a, b, strict=True):
        assert (x.answer, x.path, x.direct_answer, x.transfer_text) == (
            y.answer,
            y.path,
            y.direct_answer,
            y.transfer_text,
        )
        assert x.correct == y.correct
        if x.gold_logprob is not None:
            assert y.gold_logprob == pytest.approx(x.gold_logprob, abs=1e-4)


@pytest.mark.parametrize("gate", ["agreement", "always", "never"])
def test_concurrent_relay_answers_as_the_sequential_one(small, large, one_thread, gate):
    seq = _run(small, large, gate=gate)
    conc = _run(small, large, gate=gate, concurrent=True, large_threads=1, small_threads=1)
    _same(seq, conc)
    for r in conc:
        assert r.latency_s > 0
        if gate == "agreement":  # both models ran for every question
            assert {"large_direct", "small_reasoning"} <= set(r.stages)


def test_concurrent_confidence_gate_answers_as_the_sequential_one(small, large, one_thread):
    probs = sorted(r.direct_prob for r in _run(small, large, gate="never"))
    tau = (probs[1] + probs[2]) / 2  # two questions under tau, two over
    seq = _run(small, large, gate="confidence", tau=tau)
    conc = _run(small, large, gate="confidence", tau=tau, concurrent=True)
    _same(seq, conc)
    assert sum(r.path == "transfer" for r in conc) == 2
    for r in conc:  # a confident question's small stream ran alongside and was cancelled or finished
        if r.path == "direct":
            assert r.small_finish in ("cancelled", "length", "stop") and r.transfer_text is None
        else:
            assert r.small_finish in ("length", "stop") and r.reasoning is not None


def test_concurrent_with_early_stop_answers_as_the_sequential_early_stop(tmp_path, one_thread):
    cycle = Agent.from_pretrained(make_cycle_lm(tmp_path / "cycle"), device="cpu")
    kw = dict(gate="agreement", reason_tokens=30, answer_tokens=8, early_stop="agreement", stop_threshold=0.0)
    ex = EXAMPLES[:2]
    seq = Relay(cycle, cycle, "full", RelayConfig(**kw, batch_size=1)).run(ex, progress=False)
    conc = Relay(cycle, cycle, "full", RelayConfig(**kw, batch_size=1, concurrent=True)).run(
        ex, progress=False
    )
    assert [r.small_finish for r in seq] == ["early_stop"] * 2
    # Concurrently the direct answer may come after the first boundaries: the stop can only be later.
    for s, c in zip(seq, conc):
        assert c.answer == s.answer and c.path == s.path == "direct"
        assert c.small_finish in ("early_stop", "length") and len(c.reasoning) >= len(s.reasoning)


def test_thread_split(small, large):
    total = torch.get_num_threads()
    relay = Relay(small, large, "selfinfo", RelayConfig(concurrent=True))
    large_t, small_t = relay.threads
    assert large_t == max(1, (total + 1) // 2) and small_t == max(1, total - large_t)
    assert Relay(small, large, "selfinfo", RelayConfig(large_threads=3, small_threads=2)).threads == (3, 2)


@pytest.mark.parametrize("kw", [{"large_threads": -1}, {"small_threads": -2}, {"large_threads": 1.5}])
def test_bad_thread_counts_fail_in_the_config(kw):
    with pytest.raises(ValueError, match="threads must be an integer >= 0"):
        RelayConfig(**kw)


def test_each_worker_keeps_its_own_thread_count(small, large):
    """A worker's first torch call would reset its count from the process-wide one (the other worker's)."""
    relay = Relay(small, large, "selfinfo", RelayConfig(concurrent=True, large_threads=3, small_threads=1))
    pool = relay._pool()
    for _ in range(3):
        a = pool.submit(
            relay._in_worker,
            large,
            3,
            lambda: (torch.randn(64, 64) @ torch.randn(64, 64), torch.get_num_threads())[1],
        )
        b = pool.submit(
            relay._in_worker,
            small,
            1,
            lambda: (torch.randn(64, 64) @ torch.randn(64, 64), torch.get_num_threads())[1],
        )
        assert (a.result(), b.result()) == (3, 1)


@pytest.mark.parametrize("handoff", [True, False])
def test_small_stream_takes_the_idle_threads_once_the_direct_answer_is_in(small, large, handoff):
    """Batch 1, concurrent: the small model streams, and with handoff_threads it raises its thread count to the
    process's once the large worker's direct answer is in (a 96-token reasoning outlasts a 4-token answer)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        kw = dict(reason_tokens=96, gate="agreement", batch_size=1)
        seq = _run(small, large, **kw)
        conc = _run(
            small, large, **kw, concurrent=True, large_threads=1, small_threads=1, handoff_threads=handoff
        )
    finally:
        torch.set_num_threads(before)
    _same(seq, conc)
    # without handoff the small model is not streamed (one generate call at its share of the threads)
    assert [r.small_threads_end for r in conc] == [2 if handoff else None] * len(EXAMPLES)
