"""`tokenrelay demo`: the whole relay, offline, on the embedded synthetic world, in about two minutes.

The demo's two agents and its selector are shipped in ``checkpoints/demo/`` (tiny models trained
on ``selector.synthetic`` questions by ``scripts/build_demo.py``). On held-out questions it runs:
the large model's direct answer; the small model's reasoning and its own answer; the large model
answering from the full reasoning; from the trained selector's pick at several budgets; from each
baseline's pick at the same budgets; and the gated relay. It prints one table (accuracy,
transferred tokens, per-stage latency, answer leakage) and writes it as JSON and Markdown, with a
plot of accuracy against transferred tokens.

The relay transfers the small model's *reasoning*, not its final ``Answer:`` line
(``selector.reasoning.answer_free_length`` says why). Each distinct transfer prompt is answered
once and reused by every condition that produces it. Stage times are per question: the wall time
of a batch divided by its size.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .agents import Agent, Generation
from .answers import answers_match, contains_answer, extract_answer
from .baselines import BASELINES, load_selector, select_transfer
from .gating import Gate, answer_from_generation, answer_probability, check_gate
from .progress import progress_bar
from .prompts import answer_target, reasoning_prompt, transfer_prompt
from .reasoning import view_from_generation
from .selection import Budget, Transfer
from .synthetic import generate_problems
from .units import unit_token_counts

__all__ = [
    "DEMO_SEED",
    "DemoConfig",
    "default_checkpoints",
    "run_demo",
]

DEMO_SEED = 7
"""Seed of the demo's held-out questions (the agents and the selector never trained on them)."""
STAGE_NAMES = ("large_direct", "small_reasoning", "selection", "large_prefill", "large_decode")
BUILD_HINT = "rebuild them with `python -m scripts.build_demo` (about 20 minutes on 2 CPU cores)"


def default_checkpoints() -> Path:
    """``checkpoints/demo`` of the source tree this package was installed from (editable install)."""
    return Path(__file__).resolve().parent.parent / "checkpoints" / "demo"


@dataclass
class DemoConfig:
    """`tokenrelay demo`: run the relay on held-out synthetic questions with the shipped tiny agents."""

    questions: int = 200
    """Held-out demo questions to run."""
    out: str = "runs/demo"
    """Folder for demo_results.json, demo_results.md and demo_accuracy_vs_tokens.png."""
    checkpoints: str | None = None
    """Folder holding small/, large/ and selector/ (None: the repository's checkpoints/demo)."""
    budgets: list[float] = field(default_factory=lambda: [0.1, 0.25, 0.5])
    """Ratios of reasoning tokens (large-model tokens) for the selector and the baselines."""
    baselines: list[str] = field(default_factory=lambda: ["random", "first", "last", "selfinfo", "oracle"])
    """Baseline selectors run at every budget (oracle: each unit's measured gain, an upper reference)."""
    gate: str = "agreement"
    """Gate of the gated-relay row: agreement, confidence, always or never."""
    gate_budget: float = 0.25
    """Budget (ratio) of the gated relay's transfers, picked by the trained selector."""
    tau: float = 0.5
    """Threshold of the confidence gate."""
    batch_size: int = 50
    """Questions per generation batch."""
    reason_tokens: int = 320
    """Cap on the small model's reasoning tokens."""
    answer_tokens: int = 4
    """Cap on the large model's answer tokens."""
    seed: int = 0
    """Seed of the random baseline."""
    threads: int | None = 1
    """torch CPU threads (None: torch's default). Tiny models run fastest on one: more threads only
    wait on each other, and on a busy machine they are many times slower."""
    plot: bool = True
    """Write the PNG plot."""

    def __post_init__(self) -> None:
        if self.questions < 1:
            raise ValueError(f"questions must be >= 1, got {self.questions}")
        if not self.budgets:
            raise ValueError("give at least one budget")
        for b in [*self.budgets, self.gate_budget]:
            if not 0 < b <= 1:
                raise ValueError(f"budgets are ratios in (0, 1], got {b}")
        unknown = [b for b in self.baselines if b not in BASELINES or b in ("none", "full")]
        if unknown:
            allowed = [b for b in BASELINES if b not in ("none", "full")]
            raise ValueError(f"unknown baseline(s) {unknown}; choose from {allowed}")
        check_gate(self.gate, self.tau)
        for name in ("batch_size", "reason_tokens", "answer_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


# --------------------------------------------------------------------------- running


@dataclass
class _Answered:
    """The large model's answer to one prompt, and what producing it cost (per question)."""

    answer: str | None
    prob: float | None
    prefill_s: float
    decode_s: float


def _generate_all(agent: Agent, prompts: list[str], max_new_tokens: int, batch_size: int, bar, task, **kw):
    """Generate in length-sorted batches; per-prompt stage times are the batch's wall time / its size."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[tuple[Generation, float, float] | None] = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        gens = agent.generate([prompts[i] for i in chunk], max_new_tokens=max_new_tokens, **kw)
        for i, gen in zip(chunk, gens):
            out[i] = (gen, gen.prefill_s / len(chunk), gen.decode_s / len(chunk))
        if bar is not None:
            bar.advance(task, len(chunk))
    return out


def _load(config: DemoConfig):
    root = Path(config.checkpoints) if config.checkpoints else default_checkpoints()
    missing = [name for name in ("small", "large", "selector") if not (root / name / "config.json").is_file()]
    if missing:
        raise FileNotFoundError(
            f"the demo checkpoints {', '.join(missing)} are missing under {root}: {BUILD_HINT}"
        )
    small = Agent.from_pretrained(root / "small", device="cpu")
    large = Agent.from_pretrained(root / "large", device="cpu")
    selector = load_selector(str(root / "selector"))
    if hasattr(selector, "check_compatible"):
        selector.check_compatible(small_agent=small)
    return root, small, large, selector


def run_demo(config: DemoConfig, agents=None) -> dict:
    """Run every condition on the held-out questions; returns (and writes) the results table."""
    import torch

    if config.threads:
        torch.set_num_threads(config.threads)
    started = time.perf_counter()
    root, small, large, selector = agents if agents is not None else _load(config)
    sel_cfg = getattr(selector, "config", None)
    granularity = getattr(sel_cfg, "granularity", None) or "sentence"
    hidden_layer = (
        getattr(sel_cfg, "hidden_layer", None) if getattr(sel_cfg, "backbone", None) == "hidden" else None
    )
    problems = generate_problems(config.questions, DEMO_SEED)
    examples = [p.to_example() for p in problems]
    n = len(examples)
    gold = [ex.answer for ex in examples]
    scorers = {"selector": selector} | {
        name: load_selector(name, **({"seed": config.seed} if name == "random" else {}))
        for name in config.baselines
    }
    budgets = sorted(set(config.budgets) | {config.gate_budget})
    with progress_bar() as bar:
        # (1) the large model's direct answers; (2) the small model's reasoning.
        task = bar.add_task("large: direct answers", total=n)
        direct_prompts = [transfer_prompt(large, ex.question, None).text for ex in examples]
        direct = _generate_all(large, direct_prompts, config.answer_tokens, config.batch_size, bar, task)
        task = bar.add_task("small: reasoning", total=n)
        reason_prompts = [reasoning_prompt(small, ex.question).text for ex in examples]
        reasoning = _generate_all(
            small,
            reason_prompts,
            config.reason_tokens,
            config.batch_size,
            bar,
            task,
            hidden_layer=hidden_layer,
        )
        views, counts, small_answers = [], [], []
        for ex, (gen, _, _) in zip(examples, reasoning):
            view = view_from_generation(
                ex.question,
                gen.text,
                gen.token_ids,
                gen.logprobs,
                small.tokenizer,
                granularity=granularity,
                hidden_states=gen.hidden_states,
            )
            views.append(view)
            counts.append(unit_token_counts(view.reasoning, view.units, large.tokenizer))
            small_answers.append(extract_answer(gen.text))
        # (3) oracle labels: each unit's gain in the large model's gold log-prob, alone vs nothing.
        if "oracle" in scorers:
            task = bar.add_task("large: oracle unit gains", total=n)
            for ex, view in zip(examples, views):
                pieces = [None] + [u.text for u in view.units]
                pairs = [transfer_prompt(large, ex.question, t).as_pair() for t in pieces]
                scores = [s.logprob for s in large.score(pairs, answer_target(ex.answer), batch_size=16)]
                view.labels = [s - scores[0] for s in scores[1:]]
                bar.advance(task)
        # (4) selection for every scorer and budget.
        transfers: dict[tuple[str, float], list[Transfer]] = {}
        selection_s: dict[tuple[str, float], list[float]] = {}
        for name, scorer in [("full", load_selector("full")), *scorers.items()]:
            for b in [1.0] if name == "full" else budgets:
                key = (name, b)
                transfers[key], selection_s[key] = [], []
                for view, cnt in zip(views, counts):
                    t0 = time.perf_counter()
                    transfers[key].append(select_transfer(scorer, view, cnt, Budget.ratio(b)))
                    selection_s[key].append(time.perf_counter() - t0)
        # (5) the large model answers every distinct transfer prompt once.
        prompt_of = {
            key: [transfer_prompt(large, ex.question, t.text).text for ex, t in zip(examples, ts)]
            for key, ts in transfers.items()
        }
        distinct = sorted({p for ps in prompt_of.values() for p in ps})
        task = bar.add_task("large: answers from transfers", total=len(distinct))
        answered = {
            p: _Answered(answer_from_generation(g.text), None, pre, dec)
            for p, (g, pre, dec) in zip(
                distinct, _generate_all(large, distinct, config.answer_tokens, config.batch_size, bar, task)
            )
        }
    direct_answers = [
        _Answered(
            answer_from_generation(g.text),
            answer_probability(large.tokenizer, g.token_ids, g.logprobs),
            pre,
            dec,
        )
        for g, pre, dec in direct
    ]
    rows = []

    def ms(values: Sequence[float]) -> float:
        return 1000 * statistics.fmean(values) if values else 0.0

    def row(condition, selector_name, budget, correct, kept, share, leaked, stages):
        stages = {s: stages.get(s, 0.0) for s in STAGE_NAMES}
        rows.append(
            {
                "condition": condition,
                "selector": selector_name,
                "budget": budget,
                "accuracy": statistics.fmean(correct),
                "transferred_tokens": statistics.fmean(kept),
                "transferred_share": statistics.fmean(share),
                "leakage": statistics.fmean(leaked) if leaked is not None else None,
                "stage_ms": stages,
                "total_ms": sum(stages.values()),
            }
        )

    reason_ms = ms([pre + dec for _, pre, dec in reasoning])
    zero = [0.0] * n
    row(
        "large direct",
        "none",
        None,
        [answers_match(a.answer, g) for a, g in zip(direct_answers, gold)],
        zero,
        zero,
        None,
        {"large_direct": ms([a.prefill_s + a.decode_s for a in direct_answers])},
    )
    row(
        "small with reasoning",
        None,
        None,
        [answers_match(a, g) for a, g in zip(small_answers, gold)],
        zero,
        zero,
        None,
        {"small_reasoning": reason_ms},
    )

    def transfer_row(condition, key):
        ts, answers = transfers[key], [answered[p] for p in prompt_of[key]]
        row(
            condition,
            key[0],
            key[1],
            [answers_match(a.answer, g) for a, g in zip(answers, gold)],
            [t.kept_tokens for t in ts],
            [t.kept_tokens / max(1, t.total_tokens) for t in ts],
            [contains_answer(t.text, g) if t.text else False for t, g in zip(ts, gold)],
            {
                "small_reasoning": reason_ms,
                "selection": ms(selection_s[key]),
                "large_prefill": ms([a.prefill_s for a in answers]),
                "large_decode": ms([a.decode_s for a in answers]),
            },
        )

    transfer_row("large + full reasoning", ("full", 1.0))
    for b in sorted(config.budgets):
        transfer_row(f"large + selector @ {b:.0%}", ("selector", b))
    for name in config.baselines:
        for b in sorted(config.budgets):
            transfer_row(f"large + {name} @ {b:.0%}", (name, b))

    # (6) the gated relay: direct answer unless the gate sends the question on to a transfer.
    gate = Gate(config.gate, config.tau)
    key = ("selector", config.gate_budget)
    sent = [gate.transfer(d.answer, d.prob, s) for d, s in zip(direct_answers, small_answers)]
    final = [answered[p] if go else d for go, p, d in zip(sent, prompt_of[key], direct_answers)]
    ts = transfers[key]
    row(
        f"gated relay ({config.gate}, selector @ {config.gate_budget:.0%})",
        "selector",
        config.gate_budget,
        [answers_match(a.answer, g) for a, g in zip(final, gold)],
        [t.kept_tokens if go else 0 for t, go in zip(ts, sent)],
        [t.kept_tokens / max(1, t.total_tokens) if go else 0.0 for t, go in zip(ts, sent)],
        [contains_answer(t.text, g) if go and t.text else False for t, g, go in zip(ts, gold, sent)],
        {
            "large_direct": ms([d.prefill_s + d.decode_s for d in direct_answers]),
            "small_reasoning": reason_ms,
            "selection": ms([s if go else 0.0 for s, go in zip(selection_s[key], sent)]),
            "large_prefill": ms([a.prefill_s if go else 0.0 for a, go in zip(final, sent)]),
            "large_decode": ms([a.decode_s if go else 0.0 for a, go in zip(final, sent)]),
        },
    )
    rows[-1]["transferred_questions"] = statistics.fmean(sent)
    result = {
        "questions": n,
        "seed": DEMO_SEED,
        "checkpoints": str(root),
        "reasoning_tokens": statistics.fmean(sum(c) for c in counts),
        "distinct_large_prompts": len(distinct),
        "seconds": time.perf_counter() - started,
        "config": asdict(config),
        "rows": rows,
    }
    write_outputs(result, Path(config.out), plot=config.plot)
    return result


# --------------------------------------------------------------------------- outputs


def markdown_table(result: dict) -> str:
    """The results as a Markdown table (also what `tokenrelay demo` prints)."""
    head = (
        "| condition | accuracy | transferred tokens | share of reasoning | leakage | large direct ms | "
        "small reasoning ms | selection ms | large prefill ms | large decode ms | total ms |"
    )
    lines = [head, "|" + " --- |" * 11]
    for r in result["rows"]:
        st = r["stage_ms"]
        leak = "" if r["leakage"] is None else f"{r['leakage']:.0%}"
        lines.append(
            f"| {r['condition']} | {r['accuracy']:.1%} | {r['transferred_tokens']:.1f} | "
            f"{r['transferred_share']:.0%} | {leak} | "
            + " | ".join(f"{st[s]:.1f}" for s in STAGE_NAMES)
            + f" | {r['total_ms']:.1f} |"
        )
    return "\n".join(lines)


def write_outputs(result: dict, out: Path, plot: bool = True) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "demo_results.json", "markdown": out / "demo_results.md"}
    paths["json"].write_text(json.dumps(result, indent=2) + "\n")
    intro = (
        f"# TokenRelay demo\n\n{result['questions']} held-out synthetic questions (seed {result['seed']}), "
        f"reasoning of {result['reasoning_tokens']:.0f} large-model tokens on average. Stage times are "
        "milliseconds per question (batch wall time / batch size), on this machine.\n\n"
    )
    paths["markdown"].write_text(intro + markdown_table(result) + "\n")
    if plot:
        paths["plot"] = out / "demo_accuracy_vs_tokens.png"
        _plot(result, paths["plot"])
    return paths


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    rows = result["rows"]
    series: dict[str, list[dict]] = {}
    for r in rows:
        if r["budget"] is not None and not r["condition"].startswith("gated"):
            series.setdefault(r["selector"], []).append(r)
    for name, rs in series.items():
        rs = sorted(rs, key=lambda r: r["transferred_tokens"])
        style = {"linewidth": 2.5, "color": "black"} if name == "selector" else {}
        ax.plot(
            [r["transferred_tokens"] for r in rs],
            [r["accuracy"] for r in rs],
            marker="o",
            label={"selector": "trained selector", "full": "full reasoning"}.get(name, name),
            **style,
        )
    for r in rows:
        if r["budget"] is None or r["condition"].startswith("gated"):
            ax.scatter([r["transferred_tokens"]], [r["accuracy"]], marker="*", s=120, zorder=3)
            ax.annotate(
                r["condition"],
                (r["transferred_tokens"], r["accuracy"]),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
            )
    ax.set_xlabel("tokens transferred to the large model (mean per question)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"TokenRelay demo: {result['questions']} held-out questions")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- command


def demo_config(path: str) -> DemoConfig:
    from .cli import parse_config

    return parse_config(DemoConfig, ["--config", str(path)], "tokenrelay demo")


def main(argv: Sequence[str]) -> int:
    from .cli import parse_config, run_command

    prog = "tokenrelay demo"

    def body() -> None:
        config = parse_config(DemoConfig, argv, prog)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        result = run_demo(config)
        print(markdown_table(result))
        print(
            f"\n{result['questions']} questions in {result['seconds']:.0f} s; "
            f"results in {Path(config.out) / 'demo_results.md'} (.json, accuracy-vs-tokens .png)"
        )

    return run_command(body, prog)
