"""The demo agents' model cards: their text and the tables of measured figures. Used by
``scripts.train_demo_agents``."""

from __future__ import annotations

__all__ = [
    "LARGE_CARD",
    "LARGE_KEYS",
    "SMALL_CARD",
    "SMALL_KEYS",
    "large_shape_text",
    "metrics_table",
    "shape_text",
]

SMALL_CARD = """---
library_name: transformers
tags: [tokenrelay, demo, synthetic]
---
# TokenRelay demo — small agent (reasoner)

A {params:,}-parameter Llama-style causal LM ({shape}) with a byte-level BPE tokenizer
(vocabulary {vocab}) and a ChatML chat template. It is TokenRelay's embedded-demo *small model*:
given `selector.prompts.reasoning_prompt(agent, question)` for a synthetic chain-arithmetic question
(`selector.demo.synthetic`), it writes verbose step-by-step reasoning — filler words around one step per
assigned variable, the asked variable's step marked — then a recap and `Answer: N`. It has the
world's one slip (`selector.demo.synthetic`): when the question's last line goes one step past the asked
variable, its recap and answer overshoot to that line's value (asked for a stated constant, a lookup, it
works the chain through and reports the last value computed from it), while its marked step stays right.

It is a toy: it knows nothing outside this synthetic world.

## Training

Trained by `scripts/train_demo_agents.py` (warm start: {init}) on {train} synthetic questions
(`selector.demo.synthetic.generate_problems(seed={seed}, config=DEMO_WORLD)`, held-out demo
questions removed) with worked
solutions from `selector.demo.synthetic.verbose_reasoning(slip=True)` (fresh filler each time), loss on the
completion only: {copy_steps} warm-up steps on a synthetic copying task (random token runs, then
the same run again), then {steps} AdamW steps of {batch} sequences, peak lr {lr}, on CPU ({minutes:.1f} min wall,
{cpu_minutes:.1f} CPU-minutes).
Rebuild everything with `python -m scripts.build_demo`.

## Measured (held-out demo questions, greedy)

{metrics}
"""

LARGE_CARD = """---
library_name: transformers
tags: [tokenrelay, demo, synthetic]
---
# TokenRelay demo — large agent (answerer)

A {params:,}-parameter Llama-style causal LM ({shape}) sharing the small agent's tokenizer. It is
TokenRelay's embedded-demo *large model*: given `selector.prompts.transfer_prompt(agent, question,
reasoning)` — the question alone, or with any subset of a worked solution's sentences as the
helper's key steps — it answers in a few tokens (` N` then end of turn).

Its direct answers are weak (a few layers cannot chain several lookups and operations in one
pass); which hint sentences let it answer is whatever its training taught it (no rule in the
code says which sentence matters). Given `selector.prompts.reasoning_prompt` it writes its own worked solution, without the small
agent's slip: the demo's accurate but slow reference. Its size is what makes it slow: it was
trained at its base shape and then grown (function-preserving: new heads, MLP units and layers write
through zero output projections), so it costs per token what its full shape costs.
It is a toy: it knows nothing outside this synthetic world.

## Training

Trained by `scripts/train_demo_agents.py` (warm start: {init}) on {train} synthetic questions: a
{reason:.0%} share of training sequences are its own worked solutions; the others hold
no hint ({direct:.0%}), the whole answer-free worked solution ({full:.0%}),
or a random sentence subset (each sentence kept with a probability drawn per prompt), cut from a
worked solution whose recap overshoots as the small agent's does in a {slip:.0%} share, followed by
the gold answer; loss on the answer (weight 1) and on the prompt (weight {ctx}). {copy_steps} warm-up
steps on a synthetic copying task (random token runs, then the same run again), then {steps} AdamW
steps of {batch} sequences, peak lr {lr}, on CPU ({minutes:.1f} min wall, {cpu_minutes:.1f} CPU-minutes). Rebuild everything with
`python -m scripts.build_demo`.

## Measured (held-out demo questions, greedy, answer within 4 tokens)

{metrics}
"""


def metrics_table(metrics: dict, keys: dict[str, str]) -> str:
    lines = ["| measure | value |", "| --- | --- |"]
    for key, text in keys.items():
        if key in metrics:
            value = metrics[key]
            lines.append(f"| {text} | {value:.1%} |" if isinstance(value, float) else f"| {text} | {value} |")
    return "\n".join(lines)


SMALL_KEYS = {
    "questions": "held-out questions",
    "small_with_reasoning": "accuracy of its own final answer",
    "small_finished": "reasoning finished with an Answer line",
}
LARGE_KEYS = {
    "questions": "held-out questions",
    "large_direct": "direct answer (no hint)",
    "large_direct_lookup": "direct answer on lookup questions",
    "large_direct_chain": "direct answer on chain questions",
    "large_reasoning": "its own worked solution (reasoning prompt, up to 320 tokens)",
    "large_full_gold": "with the full worked solution",
    "large_chain_lines_gold": "with only the asked variable's chain steps",
    "large_key_sentence_gold": "with only the sentence stating the asked variable's value",
    "large_full_small": "with the small agent's full reasoning",
    "large_key_sentence_small": "with only that sentence of the small agent's reasoning",
    "key_sentence_token_share": "share of reasoning tokens in that sentence",
    "chain_lines_token_share": "share of reasoning tokens in the chain steps",
}


def shape_text(model) -> str:
    c = model.config
    return f"{c.num_hidden_layers} layers, hidden {c.hidden_size}, {c.num_attention_heads} heads, MLP {c.intermediate_size}"


def large_shape_text(info: dict, model) -> str:
    if "grown_to" not in info:
        return shape_text(model)
    g = info["grown_to"]
    return (
        f"{g['layers']} layers, hidden {g['hidden']}, {g['heads']} heads, MLP {g['ffn']}; grown by "
        f"`grow_model` from the trained {info['base_shape']} model, whose answers it reproduces "
        f"(max logit difference {info['grown_max_logit_diff']:.1e})"
    )
