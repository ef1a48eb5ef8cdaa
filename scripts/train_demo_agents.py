"""Train the embedded demo's two agents on the synthetic chain-arithmetic world (CPU, minutes).

- *small*: reads a question through ``selector.prompts.reasoning_prompt`` and writes verbose
  step-by-step reasoning with filler, a recap, then ``Answer: N`` — with the world's one slip
  (``selector.demo.synthetic``: its recap overshoots when the question goes one step past the asked
  variable, while the marked step stays right);
- *large*: reads ``selector.prompts.transfer_prompt`` holding any subset of a worked solution's
  sentences (none: the direct prompt) and answers in a few tokens; given the reasoning prompt it
  writes its own (slip-free) worked solution. After training it can be *grown*
  (``large_grow``): widened and deepened by function-preserving expansion (Net2Net-style: the new
  heads, MLP units and layers start with zero output projections), so it answers exactly as
  trained while costing what a model of the grown shape costs per token — what makes the
  latency gap between the large model's own reasoning and the relay real on a CPU, without the
  hour it would take to train a model of that size from scratch here.

Both are real Hugging Face Llama-style models with a byte-level BPE tokenizer made by ``tokenizers``
and a ChatML chat template, so ``selector.agents.Agent`` drives them with the normal prompt builders.
The large model never sees a rule telling it what matters: its direct accuracy stays low because a
few layers cannot chain several lookups and operations in one forward pass, and the steps it learns
to read from a hint are whatever training taught it to use.

    python -m scripts.train_demo_agents --out checkpoints/demo   # from scratch: ~20 CPU-minutes
    python -m scripts.train_demo_agents --out runs/agents --init-small checkpoints/demo/small \
        --init-large checkpoints/demo/small --copy-steps 0     # fine-tune from a previous release
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

from scripts.demo_agent_cards import (
    LARGE_CARD,
    LARGE_KEYS,
    SMALL_CARD,
    SMALL_KEYS,
    large_shape_text,
    metrics_table,
    shape_text,
)
from scripts.demo_agent_models import (
    ModelShape,
    build_model,
    build_tokenizer,
    grow_model,
    save_agent,
    tokenizer_corpus,
)
from selector.agents import Agent
from selector.answers import answers_match, extract_answer
from selector.demo.synthetic import (
    DEMO_WORLD,
    TARGET_MARK,
    ChainProblem,
    generate_problems,
    relevant_lines,
    strip_answer_line,
    verbose_reasoning,
)
from selector.io import write_json_atomic
from selector.prompts import answer_target, reasoning_prompt, transfer_prompt
from selector.units import join_units, split_units

# Seeds of the question sets: training draws from TRAIN_SEED, the demo's held-out set is DEMO_SEED
# (selector.demo), the selector's training set is SELECTOR_SEED; overlapping questions are removed.
TRAIN_SEED = 1000
DEMO_SEED = 7
SELECTOR_SEED = 2000


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
    init_small: str | None = None
    """Start the small model from this saved model (and its tokenizer) instead of random weights."""
    init_large: str | None = None
    """Start the large model from this saved model (same tokenizer) instead of random weights."""
    small_slip: bool = True
    """The small model's worked solutions carry the world's slip (``verbose_reasoning(slip=True)``)."""
    large_reason_rate: float = 0.4
    """Share of the large model's training sequences that are its own worked solution (reasoning prompt)."""
    hint_slip_rate: float = 0.0
    """Share of the large model's hints cut from a slipped worked solution (its recap overshoots), still
    answered with the gold: the large agent learns to trust the marked step over a wrong recap."""
    large_grow: ModelShape | None = None
    """Grow the trained large model to this shape (function-preserving: same answers, a larger model's cost)."""

    def __post_init__(self) -> None:
        for name in ("train_questions", "eval_questions", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.small_steps < 0 or self.large_steps < 0:
            raise ValueError("step counts must be >= 0")
        if self.direct_rate + self.full_rate > 1:
            raise ValueError("direct_rate + full_rate must be <= 1")
        for name in ("large_reason_rate", "hint_slip_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1]")


# --------------------------------------------------------------------------- data


def question_sets(config: TrainDemoConfig) -> tuple[list[ChainProblem], list[ChainProblem]]:
    """Training and held-out questions of the demo's world (``DEMO_WORLD``); training questions equal
    to a held-out one or to one of the selector's are dropped."""
    held_out = generate_problems(config.eval_questions, DEMO_SEED, DEMO_WORLD)
    avoid = {p.question for p in held_out}
    avoid |= {p.question for p in generate_problems(400, SELECTOR_SEED, DEMO_WORLD)}
    train = [
        p
        for p in generate_problems(config.train_questions, TRAIN_SEED, DEMO_WORLD)
        if p.question not in avoid
    ]
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
            completion = verbose_reasoning(p, rng, slip=config.small_slip) + tok.eos_token
            target = tok(completion, add_special_tokens=False)["input_ids"]
            prompt = prompts[p.id]
            rows.append((prompt + target, [0.0] * len(prompt) + [1.0] * len(target)))
        return _batch(rows, tok.pad_token_id)

    return make


def large_batches(agent: Agent, problems: list[ChainProblem], config: TrainDemoConfig):
    """Batches of transfer prompt (random hint subset) -> " N" + eos, with a light LM loss on the prompt;
    a ``large_reason_rate`` share are its own worked solutions (reasoning prompt -> slip-free reasoning)."""
    tok = agent.tokenizer
    rng = random.Random(config.seed + 2)

    def make(step: int):
        rows = []
        for p in rng.sample(problems, config.batch_size):
            if rng.random() < config.large_reason_rate:
                prompt = tok(reasoning_prompt(agent, p.question).text, add_special_tokens=False)["input_ids"]
                target = tok(verbose_reasoning(p, rng) + tok.eos_token, add_special_tokens=False)["input_ids"]
                rows.append((prompt + target, [0.0] * len(prompt) + [1.0] * len(target)))
                continue
            slip = config.hint_slip_rate > 0 and rng.random() < config.hint_slip_rate  # no draw at rate 0
            reasoning = verbose_reasoning(p, rng, with_answer=False, slip=slip)
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
    prompts = [reasoning_prompt(large, p.question).text for p in problems]
    out["large_reasoning"], _ = _accuracy(large, prompts, golds, 320, batch=25)

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
    lookups = {i for i, p in enumerate(problems) if len(p.chain) == 1}  # SyntheticConfig.lookup_rate
    for name, texts in hints.items():
        prompts = [transfer_prompt(large, p.question, h).text for p, h in zip(problems, texts)]
        out[name], answers = _accuracy(large, prompts, golds, 4)
        if name == "large_direct" and 0 < len(lookups) < len(problems):  # what a confidence gate can skip
            for kind, keep in (("lookup", True), ("chain", False)):
                rows = [i for i in range(len(problems)) if (i in lookups) == keep]  # never empty here
                right = sum(answers_match(extract_answer(answers[i]), golds[i]) for i in rows)
                out[f"large_direct_{kind}"] = right / len(rows)
    tok = large.tokenizer
    total = sum(len(tok(t)["input_ids"]) for t in gold_reasoning)
    out["key_sentence_token_share"] = (
        sum(len(tok(t)["input_ids"]) for t in hints["large_key_sentence_gold"]) / total
    )
    out["chain_lines_token_share"] = (
        sum(len(tok(t)["input_ids"]) for t in hints["large_chain_lines_gold"]) / total
    )
    return out


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
    given = config.tokenizer or (kept[0] if kept else None) or config.init_small or config.init_large
    if given:  # the agents share one tokenizer: reuse the given, kept or warm-start one
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(given)
    else:
        tokenizer = build_tokenizer(tokenizer_corpus(train, rng))
    from transformers import AutoModelForCausalLM

    previous = out / "agents_report.json"
    training: dict = {}

    def fit(name: str, shape: ModelShape, steps: int, batches, seed: int, init: str | None):
        if init:
            model = AutoModelForCausalLM.from_pretrained(init, dtype=torch.float32)
            c = model.config
            shape = ModelShape(c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size)
        else:
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
            "init": init,
            "lr": config.lr,
        }
        if name == "large" and config.large_grow is not None:
            grown = grow_model(model, config.large_grow, seed)
            probe = tokenizer([transfer_prompt(Agent(model, tokenizer), train[0].question, "").text],
                              return_tensors="pt")  # fmt: skip
            with torch.no_grad():
                diff = (grown(**probe).logits - model(**probe).logits).abs().max().item()
            training[name] |= {"grown_to": asdict(config.large_grow), "grown_max_logit_diff": diff,
                               "grown_params": grown.num_parameters(), "base_shape": shape_text(model)}  # fmt: skip
            print(f"[large] grown to {config.large_grow} (max logit difference {diff:.2e})", flush=True)
            save_agent(grown, tokenizer, out / name)
        else:
            save_agent(model, tokenizer, out / name)  # saved at once: a later failure loses nothing
        return model  # (measured below; a grown model answers the same)

    def load(path: Path):
        return AutoModelForCausalLM.from_pretrained(path) if (path / "config.json").is_file() else None

    if config.skip_small:
        small_model = load(small_dir)
    else:
        small_model = fit(
            "small", config.small, config.small_steps, small_batches, config.seed, config.init_small
        )
    if config.skip_large:
        large_model = load(large_dir)
        if large_model is not None and config.large_grow is not None:
            base = large_model.config
            if (base.hidden_size, base.num_hidden_layers) != (
                config.large_grow.hidden,
                config.large_grow.layers,
            ):
                grown = grow_model(large_model, config.large_grow, config.seed + 1)  # grow a kept base
                probe = tokenizer([train[0].question], return_tensors="pt")
                with torch.no_grad():
                    diff = (grown(**probe).logits - large_model(**probe).logits).abs().max().item()
                info = training.setdefault("large", {})
                info |= {"grown_to": asdict(config.large_grow), "grown_max_logit_diff": diff,
                         "grown_params": grown.num_parameters(), "base_shape": shape_text(large_model)}  # fmt: skip
                save_agent(grown, tokenizer, large_dir)
    else:
        large_model = fit(
            "large", config.large, config.large_steps, large_batches, config.seed + 1, config.init_large
        )
    start = time.perf_counter()
    metrics = evaluate(
        Agent(small_model, tokenizer) if small_model is not None else None,
        Agent(large_model, tokenizer) if large_model is not None else None,
        held_out,
    )
    if previous.is_file():  # another run may have trained the other agent meanwhile (merged per agent)
        before = json.loads(previous.read_text()).get("training", {})
        training = {k: {**before.get(k, {}), **training.get(k, {})} for k in {*before, *training}}
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
        "vocab": len(tokenizer),
    }

    def timing(name: str) -> dict:
        info = training.get(name, {})
        return {
            "lr": info.get("lr", config.lr),
            "steps": info.get("steps", "?"),
            "copy_steps": info.get("copy_steps", 0),
            "minutes": info.get("wall_seconds", 0) / 60,
            "cpu_minutes": info.get("cpu_seconds", 0) / 60,
        }

    if small_model is not None:
        (small_dir / "README.md").write_text(
            SMALL_CARD.format(
                params=small_model.num_parameters(),
                shape=shape_text(small_model),
                metrics=metrics_table(metrics, SMALL_KEYS),
                init=training.get("small", {}).get("init") or "none, from scratch",
                **timing("small"),
                **common,
            )
        )
    if large_model is not None:
        (large_dir / "README.md").write_text(
            LARGE_CARD.format(
                params=training.get("large", {}).get("grown_params") or large_model.num_parameters(),
                shape=large_shape_text(training.get("large", {}), large_model),
                direct=config.direct_rate,
                reason=config.large_reason_rate,
                init=training.get("large", {}).get("init") or "none, from scratch",
                full=config.full_rate,
                slip=config.hint_slip_rate,
                ctx=config.context_loss_weight,
                metrics=metrics_table(metrics, LARGE_KEYS),
                **timing("large"),
                **common,
            )
        )
    write_json_atomic(previous, report)
    return report


def config_from_yaml(path: str) -> TrainDemoConfig:
    """Build the config of a YAML file without running it (tests/test_configs.py)."""
    from selector.cmdline import parse_config

    return parse_config(TrainDemoConfig, ["--config", str(path)], "python -m scripts.train_demo_agents")


def main(argv: list[str] | None = None) -> int:
    from selector.cmdline import parse_config, run_command

    prog = "python -m scripts.train_demo_agents"
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return run_command(lambda: run(parse_config(TrainDemoConfig, argv, prog)), prog)


if __name__ == "__main__":
    sys.exit(main())
