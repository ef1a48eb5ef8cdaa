"""Rebuild everything `tokenrelay demo` ships with one command (CPU, ~30 minutes from scratch).

    python -m scripts.build_demo --out runs/demo_release   # agents + selector into a new folder
    python -m scripts.build_demo --out checkpoints/demo --overwrite   # replace the shipped release
    python -m scripts.build_demo --out D --skip-agents     # keep D's agents, retrain the selector only
    python -m scripts.build_demo --out D --demo-only       # rerun the demo, refresh D/README.md

The shipped release (``checkpoints/demo``) is never written unless ``--overwrite`` is given.

Steps (intermediate files under --work, never in the repository):

1. ``scripts/train_demo_agents.py`` trains the small and large agents -> OUT/{small,large} (``--agents-config``:
   a YAML of its options, e.g. ``configs/demo_agents.yaml``, the recipe of the shipped agents);
2. synthetic questions for the selector (``selector.demo.synthetic``, their own seed) -> WORK/selector_questions.jsonl;
3. ``tokenrelay reason --config configs/demo_reason.yaml``: the small agent's traces (with hidden states);
4. each trace's final ``Answer:`` line is cut off (``selector.traces.strip_answer_from_trace``; `reason` now does it by default): the
   relay transfers the reasoning, not the small model's verdict;
5. ``tokenrelay label --config configs/demo_label.yaml``: the large agent labels the units;
6. ``tokenrelay train --config configs/demo_train.yaml``: the selector -> OUT/selector (an explicit release
   folder, replaced with ``--release.overwrite``);
7. the confidence gate's tau: ``tokenrelay demo`` on dev questions of the world (their own seed), then
   ``tokenrelay calibrate`` (the fastest tau as accurate as always transferring) -> OUT/gate.json;
8. ``tokenrelay demo`` on the held-out questions (the evaluation engine's preset); its table goes into OUT/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parent.parent
GATE_SEED = 8  # the dev questions the gate is calibrated on (the demo's held-out set is seed 7)
THREADS = 1  # set from --threads: tiny models gain little from more, and lose a lot on a busy machine


def _tokenrelay(*args: str) -> None:
    """Run a project command exactly as a user would (a fresh process, the installed entry point)."""
    cmd = [sys.executable, "-m", "selector.cli", *args]
    print("$ tokenrelay " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": str(THREADS)})


def _short(path: Path) -> Path:
    """The path relative to the repository when it lies inside (what the checkpoints and cards record)."""
    path = path.resolve()
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def strip_traces(src: Path, dst: Path, small_model: Path) -> int:
    """Write the traces of ``src`` without their final Answer line to ``dst`` (resumable shards)."""
    from transformers import AutoTokenizer

    from selector.shards import ShardWriter
    from selector.traces import load_traces, strip_answer_from_trace

    tokenizer = AutoTokenizer.from_pretrained(small_model)
    writer = ShardWriter(dst)
    records = [r for r in load_traces(src) if r["id"] not in writer.done]
    for start in range(0, len(records), 100):
        writer.write([strip_answer_from_trace(r, tokenizer) for r in records[start : start + 100]])
    return len(records)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.build_demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/demo_release", help="where small/, large/ and selector/ go")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="allow replacing a release in checkpoints/ (never by default)",
    )
    parser.add_argument("--agents-config", default=None, help="YAML of scripts.train_demo_agents options")
    parser.add_argument(
        "--label-model",
        default=None,
        help="model that labels (default OUT/large); the large agent's pre-growth base computes the same "
        "function at a fraction of the cost",
    )
    parser.add_argument("--work", default="runs/demo_build", help="intermediate files (traces, labels, runs)")
    parser.add_argument(
        "--selector-questions", type=int, default=600, help="questions the selector learns from"
    )
    parser.add_argument(
        "--demo-questions", type=int, default=100, help="held-out questions of the final check"
    )
    parser.add_argument(
        "--gate-questions", type=int, default=200, help="dev questions the confidence gate is calibrated on"
    )
    parser.add_argument("--skip-agents", action="store_true", help="keep the trained agents in --out")
    parser.add_argument(
        "--demo-only",
        action="store_true",
        help="keep agents and selector; rerun the demo and the README table",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="delete --work first (else finished steps resume)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (every step)")
    parser.add_argument(
        "--reason-tokens", type=int, default=None, help="override demo_reason.yaml max_new_tokens"
    )
    parser.add_argument("--masks", type=int, default=None, help="override demo_label.yaml masks")
    parser.add_argument("--max-epochs", type=int, default=None, help="override demo_train.yaml max_epochs")
    args = parser.parse_args(argv)
    global THREADS
    THREADS = args.threads
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(args.threads)
    os.chdir(REPO)  # every path below may be relative to the repository
    out, work = _short(REPO / args.out), _short(REPO / args.work)
    shipped = (REPO / "checkpoints").resolve()
    if out.resolve().is_relative_to(shipped) and not args.overwrite:
        parser.error(
            f"{out} is a shipped release folder: pass --overwrite to replace it, or choose another --out"
        )
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}

    def step(name: str):
        times[name] = time.perf_counter()
        print(f"\n=== {name}", flush=True)

    def done(name: str) -> None:
        times[name] = time.perf_counter() - times[name]

    if not (args.skip_agents or args.demo_only):
        from scripts.train_demo_agents import TrainDemoConfig, run
        from selector.cmdline import parse_config

        step("agents")
        agents_argv = ["--config", args.agents_config] if args.agents_config else []
        config = parse_config(TrainDemoConfig, agents_argv, "train_demo_agents")
        run(replace(config, out=str(out), threads=args.threads))
        done("agents")
    if not args.demo_only:
        build_selector(args, out, work, step, done)
        step("gate")
        calibrate_gate(out, work, args.gate_questions)
        done("gate")
    step("demo")
    demo_out = work / "demo"
    _tokenrelay(
        "demo", "--questions", str(args.demo_questions), "--out", str(demo_out), "--checkpoints", str(out)
    )
    done("demo")
    from selector.io import write_json_atomic

    result = json.loads((demo_out / "results.json").read_text())
    write_json_atomic(out / "demo_results.json", result)
    times_file = out / "build_times.json"
    known = json.loads(times_file.read_text()) if times_file.is_file() else {}
    known.update({k: round(v, 1) for k, v in times.items()})
    write_json_atomic(times_file, known)
    write_card(out, result, known)
    print("\n" + "\n".join(f"{k}: {v / 60:.1f} min" for k, v in times.items()))
    return 0


def build_selector(args, out: Path, work: Path, step, done) -> None:
    """Steps 2-6: the selector's questions, reason, cut the Answer lines, label, train."""
    from scripts.train_demo_agents import SELECTOR_SEED
    from selector.demo.synthetic import DEMO_WORLD, write_synthetic_jsonl

    step("selector data")
    questions = work / "selector_questions.jsonl"
    write_synthetic_jsonl(questions, args.selector_questions, seed=SELECTOR_SEED, config=DEMO_WORLD)
    traces, relayed, labels = work / "traces", work / "traces_relayed", work / "labels"
    _tokenrelay(
        "reason", "--config", "configs/demo_reason.yaml",
        "--data", str(questions), "--model", str(out / "small"), "--out", str(traces),
        *(["--max_new_tokens", str(args.reason_tokens)] if args.reason_tokens else []),
    )  # fmt: skip
    print(f"{strip_traces(traces, relayed, out / 'small')} traces cut before their Answer line")
    done("selector data")
    step("labels")
    _tokenrelay(
        "label", "--config", "configs/demo_label.yaml",
        "--traces", str(relayed), "--model", str(args.label_model or out / "large"), "--out", str(labels),
        *(["--masks", str(args.masks)] if args.masks else []),
    )  # fmt: skip
    done("labels")
    step("selector")
    run_dir = work / "selector_run"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh fit (the labels above resume; training is minutes)
    _tokenrelay(
        "train", "--config", "configs/demo_train.yaml",
        "--data.data", str(labels), "--data.small_model", str(out / "small"),
        "--trainer.default_root_dir", str(run_dir), "--release.dirpath", str(out / "selector"),
        "--release.overwrite", "true",  # OUT was checked above (checkpoints/ only with --overwrite)
        *(["--trainer.max_epochs", str(args.max_epochs)] if args.max_epochs else []),
    )  # fmt: skip
    done("selector")


def calibrate_gate(out: Path, work: Path, questions: int) -> dict:
    """Step 7: the confidence gate's tau for the release, chosen by `tokenrelay calibrate` on dev
    questions of the demo's world (their own seed, never the held-out set): the fastest tau at which
    the gated relay with the trained selector is as accurate as always transferring. -> OUT/gate.json"""
    from selector.demo.preset import GATE_FILE
    from selector.evaluation.calibrate import CalibrateConfig, calibrate
    from selector.io import write_json_atomic

    dev = work / "gate_dev"
    _tokenrelay(
        "demo", "--questions", str(questions), "--question_seed", str(GATE_SEED), "--out", str(dev),
        "--checkpoints", str(out), "--tau", "0.5", "--plot", "false",
    )  # fmt: skip
    rows = json.loads((dev / "results.json").read_text())["rows"]
    always = next(
        r for r in rows if r["kind"] == "relay" and r["selector"] == "selector" and r["gate"] == "always"
    )
    chosen = calibrate(
        CalibrateConfig(eval=str(dev), target_accuracy=always["accuracy"], conditions=[always["condition"]],
                        out=str(work / "gate_relay.yaml"))
    )["chosen"]  # fmt: skip
    gate = {
        "tau": chosen["tau"],
        "how": "tokenrelay calibrate on dev questions of the demo's world: the fastest tau at which the "
        "gated relay with the trained selector reaches the accuracy of always transferring",
        "dev_seed": GATE_SEED, "dev_questions": questions, "target_accuracy": always["accuracy"],
        "dev_accuracy": chosen["accuracy"], "dev_transfer_rate": chosen["transfer_rate"],
    }  # fmt: skip
    write_json_atomic(out / GATE_FILE, gate)
    print(
        f"gate: tau {gate['tau']:.4g} (dev accuracy {chosen['accuracy']:.1%}, transfers {chosen['transfer_rate']:.0%})"
    )
    return gate


def write_card(out: Path, result: dict, times: dict[str, float]) -> None:
    """checkpoints/demo/README.md: what is shipped, how it was built, and the measured table."""
    from selector.demo import short_table, summary

    sizes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and p.suffix == ".safetensors")
    report = out / "agents_report.json"
    training = json.loads(report.read_text()).get("training", {}) if report.is_file() else {}
    cpu = sum(info.get("cpu_seconds", 0) for info in training.values())
    built = [f"agents {cpu / 60:.0f} CPU-minutes"] if cpu else []
    built += [f"{k} {v / 60:.1f} min" for k, v in times.items() if k != "agents"]
    built = ", ".join(built)
    (out / "README.md").write_text(
        f"""# TokenRelay embedded demo

What `tokenrelay demo` runs: two tiny, real Hugging Face causal LMs and a trained TokenRelay selector,
trained on the synthetic chain-arithmetic world of `selector.demo.synthetic` (questions such as
`a = 7. b = a + 5. c = 3. d = b - 4. e = c + 2. f = d + 1. What is f?`, whose distractor lines do not
matter for the answer; a quarter are lookups such as `... What is a?`; the agents' recipe is in their
model cards and `configs/demo_agents*.yaml`). The large agent's own reasoning is the accurate but slow
reference, and it answers lookups directly; the small agent reasons faster but its recap overshoots
(on about one chain question in six, and on lookups it works the chain through); the relay hands the
large agent the selected steps of the small agent's reasoning, and its confidence gate (tau in
`gate.json`, calibrated on dev questions of the world) skips the small agent when the large one is sure.

| folder | what |
| --- | --- |
| `small/` | the small agent: writes verbose step-by-step reasoning, a recap, then `Answer: N`, with one characteristic slip (model card inside) |
| `large/` | the large agent: answers in a few tokens, directly or from a transfer prompt, or writes its own slip-free reasoning; grown to a larger model's cost (model card inside) |
| `selector/` | the selector (`hidden` backbone: the small agent's hidden states), trained by `tokenrelay train` |
| `gate.json` | the confidence gate's tau, calibrated on 200 dev questions of the world (their own seed) |
| `agents_report.json`, `demo_results.json`, `build_times.json` | the measurements below, as JSON |

Weights: {sizes / 1e6:.1f} MB of safetensors in all. Rebuilt with `python -m scripts.build_demo`
(measured here: {built}):
the agents by `scripts/train_demo_agents.py`, then the selector through the project's own commands with `configs/demo_reason.yaml`, `configs/demo_label.yaml` and
`configs/demo_train.yaml` (the traces' final `Answer:` line is cut before labelling: the relay
transfers reasoning, not the small model's verdict).

## Measured by `tokenrelay demo` ({result["questions"]} held-out questions)

{short_table(result)}

{chr(10).join(summary(result))}

Stage times are seconds: the evaluation engine counts a batched stage's wall time for each question
of the batch (here one batch of {result["config"]["relay"]["batch_size"]}, one CPU thread), measured when each
output was first computed, on a machine shared with other jobs. Leakage counts transfers that state the gold number
anywhere: with single-digit answers that often happens by coincidence, so it is high even for
transfers that do not help. Every row (the gated heuristics too) is in `demo_results.json`.
"""
    )


if __name__ == "__main__":
    sys.exit(main())
