"""Early stop of the small model: streaming equals generation, and each signal stops where its rule says.

The planted model: a tiny Llama whose layers add nothing (attention and MLP outputs zeroed), so the
next token depends on the last one only, and whose LM head walks a cycle " Th sky is blue." forever:
a stream of complete sentences, with a trial answer of planted confidence (0.938) after any of them.
"""

from __future__ import annotations

import math

import pytest
import torch

from selector.agents import Agent
from selector.answers import answers_match
from selector.data import Example
from selector.early_stop import check_early_stop, stream_generate
from selector.relay import Relay, RelayConfig
from selector.units import split_units
from tests.tiny_models import make_causal_lm

CYCLE = (" Th", " sky", " is", " blue", ".")


def make_cycle_lm(out):
    """A tiny model that greedily writes ' sky is blue. Th sky is blue. Th ...' after a chat prompt.

    The embeddings of the cycle's tokens, of the chat prompt's last token and of the answer cue's
    last token are orthonormal (every other token's is orthogonal to them), so each next token is
    planted: the cycle is followed with p ~ 1, and after the cue ' sky' wins over ' blue' at p = 0.6,
    which makes an 8-token trial answer's confidence 0.6 ** (1/8) = 0.938.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    make_causal_lm(out)
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = [tok.encode(w, add_special_tokens=False)[0] for w in CYCLE]
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "x"}], add_generation_prompt=True, tokenize=False
    )
    start = tok.encode(chat, add_special_tokens=False)[-1]
    cue = tok.encode("\nAnswer:", add_special_tokens=False)[-1]
    planted = [*ids, start, cue]
    assert len(set(planted)) == len(planted)
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = model.model.embed_tokens.weight
        basis, _ = torch.linalg.qr(torch.randn(emb.shape[1], len(planted)))
        rest = torch.randn_like(emb)
        rest -= rest @ basis @ basis.T  # every other token is orthogonal to the planted ones
        emb.copy_(torch.nn.functional.normalize(rest, dim=-1))
        emb[planted] = basis.T
        head = model.lm_head.weight
        head.zero_()
        for a, b in zip(ids, ids[1:] + ids[:1]):
            head[b] += 20 * emb[a]
        head[ids[1]] += 20 * emb[start]  # the reasoning starts with ' sky'
        # After the cue: ' sky' at p = 0.6, ' blue' at 0.4 (RMSNorm scales a unit vector by sqrt(hidden)).
        head[ids[1]] += 20 * emb[cue]
        head[ids[3]] += (20 - math.log(1.5) / math.sqrt(emb.shape[1])) * emb[cue]
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def cycle(tmp_path_factory):
    return Agent.from_pretrained(make_cycle_lm(tmp_path_factory.mktemp("models") / "cycle"), device="cpu")


@pytest.fixture(scope="module")
def tiny(tiny_lm_dir):
    return Agent.from_pretrained(tiny_lm_dir, device="cpu")


def test_stream_without_a_stop_equals_generate(tiny, cycle, one_thread):
    for agent in (tiny, cycle):
        prompt = agent.format_chat("What is 2 + 3?")
        gen = agent.generate([prompt], max_new_tokens=20)[0]
        # Checks that never stop still run their trial answers on the cache: nothing may change.
        stream = stream_generate(agent, prompt, max_new_tokens=20, should_stop=lambda b: b.trial() and False)
        assert stream.generation.token_ids == gen.token_ids
        assert stream.generation.logprobs == pytest.approx(gen.logprobs, abs=1e-4)
        assert stream.generation.finish_reason == gen.finish_reason == "length"
    assert stream.checks >= 3 and stream.trial.prob == pytest.approx(0.6 ** (1 / 8), abs=1e-3)


@pytest.mark.parametrize(
    ("threshold", "every", "units"), [(0.9, 1, 1), (0.9, 2, 2), (0.9, 3, 3), (0.95, 1, None)]
)
def test_confidence_stops_at_the_first_checked_boundary_over_threshold(
    cycle, one_thread, threshold, every, units
):
    prompt = cycle.format_chat("What is 2 + 3?")
    stream = stream_generate(
        cycle, prompt, max_new_tokens=30, check_every=every,
        should_stop=lambda b: b.trial().prob >= threshold,
    )  # fmt: skip
    gen = stream.generation
    if units is None:  # p = 0.938 never reaches 0.95: the stream runs to its cap
        assert gen.finish_reason == "length" and gen.new_tokens == 30 and stream.checks >= 5
        return
    assert gen.finish_reason == "early_stop" and stream.checks == 1
    assert len(split_units(gen.text, "sentence")) == units
    assert gen.text == " sky is blue." + " Th sky is blue." * (units - 1)  # ends on a whole unit
    assert gen.token_ids == cycle.encode_text(gen.text).tolist()


def test_relay_confidence_signal_transfers_the_stopped_reasoning(cycle, one_thread):
    ex = [Example("q0", "What is 2 + 3?", "5")]
    cfg = dict(gate="always", selector="full", reason_tokens=30, answer_tokens=4, batch_size=1)
    full = Relay(cycle, cycle, "full", RelayConfig(**cfg)).run(ex, progress=False)[0]
    stopped = Relay(cycle, cycle, "full", RelayConfig(**cfg, early_stop="confidence", check_every=2)).run(
        ex, progress=False
    )[0]
    assert full.small_finish == "length" and stopped.small_finish == "early_stop" and stopped.stop_checks == 1
    assert stopped.reasoning == " sky is blue. Th sky is blue."
    assert stopped.transfer_text == stopped.reasoning.strip()
    assert stopped.small_answer == "sky is blue. Th sky is blue"  # the 8-token trial answer that stopped it
    assert stopped.stages["small_reasoning"].new_tokens < full.stages["small_reasoning"].new_tokens


def test_agreement_signal_stops_when_the_trial_answer_matches_the_direct_answer(cycle, one_thread):
    """The same model answers directly after 'Answer:' and on its trial after the cue '\\nAnswer:':
    the two answers agree at the first boundary, so the small model stops there and the agreement
    gate answers directly. A cue whose answer differs never agrees: no stop."""
    ex = [Example("q0", "What is 2 + 3?", "5")]
    cfg = dict(gate="agreement", selector="full", reason_tokens=30, answer_tokens=8, trial_tokens=8)
    r = Relay(cycle, cycle, "full", RelayConfig(**cfg, early_stop="agreement", stop_threshold=0.0)).run(ex)[0]
    assert r.small_finish == "early_stop" and r.stop_checks == 1
    assert answers_match(r.small_answer, r.direct_answer) and r.path == "direct"
    assert r.reasoning == " sky is blue."
    other = RelayConfig(**cfg, early_stop="agreement", stop_threshold=0.0, stop_cue=" blue")
    r = Relay(cycle, cycle, "full", other).run(ex, progress=False)[0]
    assert r.small_finish == "length" and r.stop_checks >= 5


def test_selector_signal_stops_when_new_units_are_not_kept(cycle, one_thread):
    """'first' at top-1 keeps only the first unit: at the second boundary the newest unit is not kept."""
    ex = [Example("q0", "What is 2 + 3?", "5")]
    cfg = RelayConfig(gate="always", budget=1, budget_kind="topk", reason_tokens=30, early_stop="selector")
    r = Relay(cycle, cycle, "first", cfg).run(ex, progress=False)[0]
    assert r.small_finish == "early_stop" and r.stop_checks == 2
    assert r.reasoning == " sky is blue. Th sky is blue."
    assert r.transfer_text == "sky is blue."


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"early_stop": "magic"}, "unknown early_stop signal"),
        ({"early_stop": "confidence", "stop_threshold": -0.1}, "stop_threshold"),
        ({"early_stop": "confidence", "stop_threshold": 1.5}, "stop_threshold"),
        ({"early_stop": "confidence", "check_every": 0}, "check_every"),
        ({"early_stop": "confidence", "trial_tokens": 0}, "trial_tokens"),
        ({"early_stop": "confidence", "stop_cue": "  "}, "stop_cue"),
        ({"early_stop": "agreement", "gate": "always"}, "direct answer"),
    ],
)
def test_bad_early_stop_settings_fail_in_the_config(kw, message):
    with pytest.raises(ValueError, match=message):
        RelayConfig(**kw)


def test_check_early_stop_accepts_the_defaults():
    check_early_stop("none", 0.9, 1, 8, "\nAnswer:")
    for signal in ("confidence", "agreement", "selector"):
        assert RelayConfig(early_stop=signal).early_stop == signal


def test_infer_refuses_a_bad_signal_before_loading_a_model(capsys):
    from selector.cli import main

    code = main(["infer", "--relay.large", "/no/such/model", "--relay.small", "/no/such/small", "--question", "2+3?",
                 "--relay.early_stop", "magic"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "unknown early_stop signal 'magic'" in err and "Traceback" not in err
