"""Train the embedded demo's two agents on the synthetic chain-arithmetic world (CPU, minutes).

- *small*: reads a question through ``selector.prompts.reasoning_prompt`` and writes verbose
  step-by-step reasoning with filler, then ``Answer: N``;
- *large*: reads ``selector.prompts.transfer_prompt`` holding any subset of a worked solution's
  sentences (none: the direct prompt) and answers in a few tokens.

Both are real Hugging Face Llama-style models with a byte-level BPE tokenizer made by ``tokenizers``
and a ChatML chat template, so ``selector.agents.Agent`` drives them with the normal prompt builders.
The large model never sees a rule telling it what matters: its direct accuracy stays low because a
few layers cannot chain several lookups and operations in one forward pass, and the steps it learns
to read from a hint are whatever training taught it to use.

    python -m scripts.train_demo_agents --out checkpoints/demo   # ~17 CPU-minutes: ~10-15 min on 2 cores
    python -m scripts.train_demo_agents --out /tmp/demo --copy-steps 20 --small-steps 20 --large-steps 20

Each agent first spends ``copy_steps`` cheap steps on a synthetic copying task (see
``copy_batches``): without it, 400 task steps left both agents unable to look variables up.
The two agents can train in separate processes (``--skip-large`` / ``--skip-small`` with a shared
``--tokenizer``); a run with both skipped only re-measures them and rewrites the model cards.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selector.agents import Agent
from selector.answers import answers_match, extract_answer
from selector.prompts import answer_target, reasoning_prompt, transfer_prompt
from selector.synthetic import (
    TARGET_MARK,
    ChainProblem,
    generate_problems,
    relevant_lines,
    strip_answer_line,
    verbose_reasoning,
)
from selector.units import join_units, split_units

SPECIAL_TOKENS = ["<pad>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Seeds of the question sets: training draws from TRAIN_SEED, the demo's held-out set is DEMO_SEED
# (selector.demo), the selector's training set is SELECTOR_SEED; overlapping questions are removed.
TRAIN_SEED = 1000
DEMO_SEED = 7
SELECTOR_SEED = 2000


@dataclass
class ModelShape:
    """A tiny Llama-style decoder."""

    hidden: int = 128
    """Hidden size."""
    layers: int = 4
    """Decoder layers."""
    heads: int = 4
    """Attention heads (key/value heads too)."""
    ffn: int = 384
    """MLP intermediate size."""


@dataclass
class TrainDemoConfig:
    """Train the demo's small (reasoning) and large (answering) agents."""

    out: str = "checkpoints/demo"
    """Folder receiving ``small/`` and ``large/`` (save_pretrained + model card)."""
    train_questions: int = 6000
    """Training questions (each small-model epoch re-draws the filler of their reasoning)."""
    eval_questions: int = 200
    """Held-out questions (the demo's own set) measured after training."""
    small: ModelShape = field(default_factory=lambda: ModelShape(hidden=64, layers=3, ffn=192))
    """The small model's shape."""
    large: ModelShape = field(default_factory=lambda: ModelShape(hidden=96, layers=3, ffn=288))
    """The large model's shape."""
    small_steps: int = 500
    """Optimizer steps of the small model on its task (after the copy warm-up)."""
    large_steps: int = 500
    """Optimizer steps of the large model on its task (after the copy warm-up)."""
    copy_steps: int = 600
    """Warm-up steps on a synthetic copying task before each agent's task (see ``copy_batches``)."""
    batch_size: int = 32
    """Sequences per step."""
    lr: float = 5e-3
    """Peak learning rate (linear warm-up, constant, linear decay over the last fifth)."""
    direct_rate: float = 0.2
    """Share of the large model's training prompts with no hint (the direct-answer prompt)."""
    full_rate: float = 0.2
    """Share of the large model's training prompts holding the whole reasoning."""
    context_loss_weight: float = 0.1
    """Weight of the language-model loss on the large model's prompt tokens (the answer has weight 1)."""
    threads: int = 2
    """torch CPU threads."""
    seed: int = 0
    """Seed of weights, batches and hint subsets."""
    tokenizer: str | None = None
    """Use this saved tokenizer instead of building one (lets the agents train in separate runs)."""
    skip_small: bool = False
    """Do not train the small model: use ``out/small`` if it is there (else go without)."""
    skip_large: bool = False
    """Do not train the large model: use ``out/large`` if it is there (else go without)."""

    def __post_init__(self) -> None:
        for name in ("train_questions", "eval_questions", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.small_steps < 0 or self.large_steps < 0:
            raise ValueError("step counts must be >= 0")
        if self.direct_rate + self.full_rate > 1:
            raise ValueError("direct_rate + full_rate must be <= 1")


# --------------------------------------------------------------------------- tokenizer and models


def build_tokenizer(corpus: list[str], vocab_size: int = 1200):
    """A byte-level BPE tokenizer trained on the demo's text, with a ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    numbers = " ".join(str(n) for n in range(-50, 200))
    tok.train_from_iterator([*corpus, *[numbers] * 50], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<|im_end|>")
    fast.chat_template = CHATML_TEMPLATE
    return fast


def tokenizer_corpus(problems: list[ChainProblem], rng: random.Random) -> list[str]:
    """Questions, worked solutions and the prompt builders' fixed wording (so instructions are few tokens)."""
    from selector.prompts import PromptTemplate

    template = PromptTemplate()
    fixed = [template.reasoning_instruction, template.direct_instruction, template.transfer_header]
    corpus = [*fixed * 200, "user", "assistant", "system"]
    for p in problems[:3000]:
        corpus += [p.question, verbose_reasoning(p, rng)]
    return corpus


def build_model(tokenizer, shape: ModelShape, seed: int):
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        intermediate_size=shape.ffn,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.heads,
        max_position_embeddings=768,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    return model


# --------------------------------------------------------------------------- data


def question_sets(config: TrainDemoConfig) -> tuple[list[ChainProblem], list[ChainProblem]]:
    """Training and held-out questions; training questions equal to a held-out one are dropped."""
    held_out = generate_problems(config.eval_questions, DEMO_SEED)
    avoid = {p.question for p in held_out}
    avoid |= {p.question for p in generate_problems(400, SELECTOR_SEED)}
    train = [p for p in generate_problems(config.train_questions, TRAIN_SEED) if p.question not in avoid]
    return train, held_out


def hint_subset(reasoning: str, rng: random.Random, config: TrainDemoConfig) -> str:
    """A random sentence subset of the (answer-free) reasoning: none, all, or each kept with prob p."""
    units = split_units(reasoning, "sentence")
    r = rng.random()
    if r < config.direct_rate:
        return ""
    if r < config.direct_rate + config.full_rate:
        return reasoning.strip()
    p = rng.random()
    return join_units(reasoning, units, [rng.random() < p for _ in units])


def _batch(rows: list[tuple[list[int], list[float]]], pad_id: int):
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    weights = torch.zeros((len(rows), width))
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row_ids, row_w) in enumerate(rows):
        ids[i, : len(row_ids)] = torch.tensor(row_ids)
        weights[i, : len(row_w)] = torch.tensor(row_w)
        mask[i, : len(row_ids)] = 1
    return ids, mask, weights


def _weighted_loss(model, ids, mask, weights) -> torch.Tensor:
    """Cross-entropy of each next token, weighted (weight of token t = weights[t])."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    target, w = ids[:, 1:], weights[:, 1:]
    ce = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none"
    )
    return (ce * w.reshape(-1)).sum() / w.sum().clamp(min=1e-6)


def _train(
    model, make_batch, steps: int, config: TrainDemoConfig, label: str, warmup_batch=None
) -> list[float]:
    """AdamW with warm-up, a constant rate, then a linear decay over the last fifth; returns the losses.

    The first ``config.copy_steps`` steps use ``warmup_batch`` (the copying task) when given.
    """
    copy_steps = config.copy_steps if warmup_batch is not None else 0
    total = steps + copy_steps
    if total == 0:
        return []
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warm, decay = max(1, total // 25), max(1, total // 5)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm, max(0.05, (total - s) / decay))
    )
    model.train()
    losses, start = [], time.perf_counter()
    for step in range(total):
        warming = step < copy_steps
        ids, mask, weights = warmup_batch(step) if warming else make_batch(step)
        loss = _weighted_loss(model, ids, mask, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if step % 50 == 0 or step == total - 1 or step == copy_steps - 1:
            recent = losses[max(copy_steps if not warming else 0, len(losses) - 50) :]
            phase = "copy warm-up" if warming else "task"
            print(
                f"[{label}] step {step + 1}/{total} ({phase}) loss {sum(recent) / len(recent):.4f} "
                f"({time.perf_counter() - start:.0f}s)",
                flush=True,
            )
    model.eval()
    return losses[copy_steps:]


def copy_batches(tokenizer, config: TrainDemoConfig, seed: int):
    """A synthetic warm-up: runs of random demo-vocabulary tokens, then the same run again (loss on the copy).

    Predicting the repeat needs exactly the lookup both agents use later (find an earlier
    occurrence, read what followed it), and on these short, dense sequences it is learned in
    a fraction of the task's compute.
    """
    rng = random.Random(seed)
    special = set(tokenizer.all_special_ids)
    pool = [i for i in range(len(tokenizer)) if i not in special]
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]

    def make(step: int):
        rows = []
        for _ in range(2 * config.batch_size):
            run = [rng.choice(pool) for _ in range(rng.randint(6, 20))]
            ids = run + newline + run
            rows.append((ids, [0.0] * (len(run) + len(newline) + 1) + [1.0] * (len(run) - 1)))
        return _batch(rows, tokenizer.pad_token_id)

    return make


def small_batches(agent: Agent, problems: list[ChainProblem], config: TrainDemoConfig):
    """Batches of reasoning prompt -> verbose reasoning + eos (loss on the completion only)."""
    tok = agent.tokenizer
    rng = random.Random(config.seed + 1)
    prompts = {
        p.id: tok(reasoning_prompt(agent, p.question).text, add_special_tokens=False)["input_ids"]
        for p in problems
    }

    def make(step: int):
        rows = []
        for p in rng.sample(problems, config.batch_size):
            completion = verbose_reasoning(p, rng) + tok.eos_token
            target = tok(completion, add_special_tokens=False)["input_ids"]
            prompt = prompts[p.id]
            rows.append((prompt + target, [0.0] * len(prompt) + [1.0] * len(target)))
        return _batch(rows, tok.pad_token_id)

    return make


def large_batches(agent: Agent, problems: list[ChainProblem], config: TrainDemoConfig):
    """Batches of transfer prompt (random hint subset) -> " N" + eos, with a light LM loss on the prompt."""
    tok = agent.tokenizer
    rng = random.Random(config.seed + 2)

    def make(step: int):
        rows = []
        for p in rng.sample(problems, config.batch_size):
            reasoning = verbose_reasoning(p, rng, with_answer=False)
            hint = hint_subset(reasoning, rng, config)
            prompt = tok(transfer_prompt(agent, p.question, hint).text, add_special_tokens=False)["input_ids"]
            target = tok(answer_target(p.answer) + tok.eos_token, add_special_tokens=False)["input_ids"]
            w = config.context_loss_weight
            rows.append((prompt + target, [w] * len(prompt) + [1.0] * len(target)))
        return _batch(rows, tok.pad_token_id)

    return make


# --------------------------------------------------------------------------- evaluation


def _accuracy(agent: Agent, prompts: list[str], golds: list[str], max_new_tokens: int, batch: int = 50):
    correct, texts = 0, []
    for start in range(0, len(prompts), batch):
        gens = agent.generate(prompts[start : start + batch], max_new_tokens=max_new_tokens)
        for gen, gold in zip(gens, golds[start : start + batch]):
            texts.append(gen.text)
            correct += answers_match(extract_answer(gen.text), gold)
    return correct / max(1, len(prompts)), texts


def evaluate(small: Agent | None, large: Agent | None, problems: list[ChainProblem]) -> dict:
    """Accuracies on held-out questions: the small model's own, and the large model's per hint kind."""
    rng = random.Random(12345)
    golds = [p.answer for p in problems]
    gold_reasoning = [verbose_reasoning(p, rng, with_answer=False) for p in problems]
    out: dict = {"questions": len(problems)}
    small_texts = None
    if small is not None:
        prompts = [reasoning_prompt(small, p.question).text for p in problems]
        out["small_with_reasoning"], small_texts = _accuracy(small, prompts, golds, 320, batch=25)
        out["small_finished"] = sum("Answer:" in t for t in small_texts) / len(problems)
    if large is None:
        return out

    def key_sentence(text: str) -> str:
        """The sentence stating the asked variable's value (the unit an oracle would keep)."""
        return next((u.text for u in split_units(text, "sentence") if TARGET_MARK in u.text), "")

    def chain_lines(p: ChainProblem, text: str) -> str:
        lines = text.split("\n")
        return "\n".join(lines[i] for i in relevant_lines(p, text))

    hints = {
        "large_direct": ["" for _ in problems],
        "large_full_gold": gold_reasoning,
        "large_chain_lines_gold": [chain_lines(p, t) for p, t in zip(problems, gold_reasoning)],
        "large_key_sentence_gold": [key_sentence(t) for t in gold_reasoning],
    }
    if small_texts is not None:
        stripped = [strip_answer_line(t) for t in small_texts]
        hints["large_full_small"] = stripped
        hints["large_key_sentence_small"] = [key_sentence(t) for t in stripped]
    for name, texts in hints.items():
        prompts = [transfer_prompt(large, p.question, h).text for p, h in zip(problems, texts)]
        out[name], _ = _accuracy(large, prompts, golds, 4)
    tok = large.tokenizer
    total = sum(len(tok(t)["input_ids"]) for t in gold_reasoning)
    out["key_sentence_token_share"] = (
        sum(len(tok(t)["input_ids"]) for t in hints["large_key_sentence_gold"]) / total
    )
    out["chain_lines_token_share"] = (
        sum(len(tok(t)["input_ids"]) for t in hints["large_chain_lines_gold"]) / total
    )
    return out


# --------------------------------------------------------------------------- model cards

SMALL_CARD = """---
library_name: transformers
tags: [tokenrelay, demo, synthetic]
---
# TokenRelay demo — small agent (reasoner)

A {params:,}-parameter Llama-style causal LM ({shape}) with a byte-level BPE tokenizer
(vocabulary {vocab}) and a ChatML chat template. It is TokenRelay's embedded-demo *small model*:
given `selector.prompts.reasoning_prompt(agent, question)` for a synthetic chain-arithmetic question
(`selector.synthetic`), it writes verbose step-by-step reasoning — filler words around one step per
assigned variable, the asked variable's step marked — and ends with `Answer: N`.

It is a toy: it knows nothing outside this synthetic world.

## Training

Trained from scratch by `scripts/train_demo_agents.py` on {train} synthetic questions
(`selector.synthetic.generate_problems(seed={seed})`, held-out demo questions removed) with worked
solutions from `selector.synthetic.verbose_reasoning` (fresh filler each time), loss on the
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
code says which sentence matters). It is a toy: it knows nothing outside this synthetic world.

## Training

Trained from scratch by `scripts/train_demo_agents.py` on {train} synthetic questions: each
training prompt holds no hint ({direct:.0%}), the whole answer-free worked solution ({full:.0%}),
or a random sentence subset (each sentence kept with a probability drawn per prompt), followed by
the gold answer; loss on the answer (weight 1) and on the prompt (weight {ctx}). {copy_steps} warm-up
steps on a synthetic copying task (random token runs, then the same run again), then {steps} AdamW
steps of {batch} sequences, peak lr {lr}, on CPU ({minutes:.1f} min wall, {cpu_minutes:.1f} CPU-minutes). Rebuild everything with
`python -m scripts.build_demo`.

## Measured (held-out demo questions, greedy, answer within 4 tokens)

{metrics}
"""


def _metrics_table(metrics: dict, keys: dict[str, str]) -> str:
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
    "large_full_gold": "with the full worked solution",
    "large_chain_lines_gold": "with only the asked variable's chain steps",
    "large_key_sentence_gold": "with only the sentence stating the asked variable's value",
    "large_full_small": "with the small agent's full reasoning",
    "large_key_sentence_small": "with only that sentence of the small agent's reasoning",
    "key_sentence_token_share": "share of reasoning tokens in that sentence",
    "chain_lines_token_share": "share of reasoning tokens in the chain steps",
}


def _shape_text(model) -> str:
    c = model.config
    return f"{c.num_hidden_layers} layers, hidden {c.hidden_size}, {c.num_attention_heads} heads, MLP {c.intermediate_size}"


def _save(model, tokenizer, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


# --------------------------------------------------------------------------- main


def run(config: TrainDemoConfig) -> dict:
    torch.set_num_threads(config.threads)
    out = Path(config.out)
    train, held_out = question_sets(config)
    print(f"{len(train)} training questions, {len(held_out)} held-out", flush=True)
    rng = random.Random(config.seed)
    out.mkdir(parents=True, exist_ok=True)
    small_dir, large_dir = out / "small", out / "large"
    kept = [d for d, skip in ((small_dir, config.skip_small), (large_dir, config.skip_large)) if skip]
    kept = [d for d in kept if (d / "config.json").is_file()]
    if config.tokenizer or kept:  # the agents share one tokenizer: reuse the given or kept one
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(config.tokenizer or kept[0])
    else:
        tokenizer = build_tokenizer(tokenizer_corpus(train, rng))
    from transformers import AutoModelForCausalLM

    previous = out / "agents_report.json"
    training: dict = {}

    def fit(name: str, shape: ModelShape, steps: int, batches, seed: int):
        model = build_model(tokenizer, shape, seed)
        wall, cpu = time.perf_counter(), time.process_time()
        warmup = copy_batches(tokenizer, config, seed + 7)
        losses = _train(model, batches(Agent(model, tokenizer), train, config), steps, config, name, warmup)
        training[name] = {
            "steps": steps,
            "copy_steps": config.copy_steps,
            "wall_seconds": time.perf_counter() - wall,
            "cpu_seconds": time.process_time() - cpu,
            "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
            "shape": asdict(shape),
        }
        _save(model, tokenizer, out / name)  # saved at once: a later failure loses nothing
        return model

    def load(path: Path):
        return AutoModelForCausalLM.from_pretrained(path) if (path / "config.json").is_file() else None

    if config.skip_small:
        small_model = load(small_dir)
    else:
        small_model = fit("small", config.small, config.small_steps, small_batches, config.seed)
    if config.skip_large:
        large_model = load(large_dir)
    else:
        large_model = fit("large", config.large, config.large_steps, large_batches, config.seed + 1)
    start = time.perf_counter()
    metrics = evaluate(
        Agent(small_model, tokenizer) if small_model is not None else None,
        Agent(large_model, tokenizer) if large_model is not None else None,
        held_out,
    )
    if previous.is_file():  # another run may have trained the other agent meanwhile
        training = json.loads(previous.read_text()).get("training", {}) | training
    report = {
        "config": asdict(config),
        "training": training,
        "metrics": metrics,
        "eval_seconds": time.perf_counter() - start,
    }
    print(json.dumps(metrics, indent=2), flush=True)
    common = {
        "train": len(train),
        "seed": TRAIN_SEED,
        "batch": config.batch_size,
        "lr": config.lr,
        "vocab": len(tokenizer),
    }

    def timing(name: str) -> dict:
        info = training.get(name, {})
        return {
            "steps": info.get("steps", "?"),
            "copy_steps": info.get("copy_steps", 0),
            "minutes": info.get("wall_seconds", 0) / 60,
            "cpu_minutes": info.get("cpu_seconds", 0) / 60,
        }

    if small_model is not None:
        (small_dir / "README.md").write_text(
            SMALL_CARD.format(
                params=small_model.num_parameters(),
                shape=_shape_text(small_model),
                metrics=_metrics_table(metrics, SMALL_KEYS),
                **timing("small"),
                **common,
            )
        )
    if large_model is not None:
        (large_dir / "README.md").write_text(
            LARGE_CARD.format(
                params=large_model.num_parameters(),
                shape=_shape_text(large_model),
                direct=config.direct_rate,
                full=config.full_rate,
                ctx=config.context_loss_weight,
                metrics=_metrics_table(metrics, LARGE_KEYS),
                **timing("large"),
                **common,
            )
        )
    previous.write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    from selector.cli import parse_config, run_command

    prog = "python -m scripts.train_demo_agents"
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return run_command(lambda: run(parse_config(TrainDemoConfig, argv, prog)), prog)


if __name__ == "__main__":
    sys.exit(main())
