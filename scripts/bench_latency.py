"""Latency benchmark: accuracy against measured end-to-end latency, and what each latency lever buys.

    python -m scripts.bench_latency --config configs/latency_real.yaml          # the real pair (CPU)
    python -m scripts.bench_latency --relay.small S --relay.large L --data TEST.jsonl --dev_data DEV.jsonl --out OUT

Three parts, all at batch size 1 (per-question latency), on the same machine and cores:

1. ``tokenrelay eval`` (the evaluation engine and its output cache, ``OUT/eval``) on the test
   questions: large direct, large own reasoning, small own reasoning, and the sequential relay with
   each gate of ``gates`` (selector ``selector`` at ``budget``). Their latency is the sum of the
   stages, each measured when first computed (cached thereafter).
2. Calibration (with ``dev_data``): ``tokenrelay eval`` on the dev questions (large direct and the
   relay at gate always, ``OUT/dev_eval``), then ``tokenrelay calibrate`` picks the confidence gate's
   tau for ``target_accuracy`` (default: the dev accuracy of always transferring), written to
   ``OUT/calibrated_relay.yaml``. Without dev data the ``calibrated`` lever uses ``relay.tau``. A target no
   setting reaches on the dev questions is a finding, not a failure: the report says so and the
   ``calibrated`` levers are skipped.
3. The levers, live (no output cache: wall time is the point), each a relay run over the test
   questions: ``concurrent`` (large direct answer and small reasoning at the same time, on
   ``relay.large_threads`` + ``relay.small_threads`` of the cores), ``stop=SIGNAL`` (early stop of the small model,
   ``selector.early_stop``), ``calibrated`` (confidence gate at the calibrated tau), alone and joined
   with ``+``. Levers without ``calibrated`` use the agreement gate. Per-question results go to
   ``OUT/live/LEVER-DIGEST.jsonl`` (digest of its settings) as they finish, so an interrupted run
   resumes and a changed setting starts afresh.

Prints one table (accuracy, gold log-prob, transfer rate, mean end-to-end seconds, its ratio to the
large model's own reasoning, torch threads per model) and writes ``OUT/latency.{json,md,png}`` (the
PNG marks the Pareto front), with each lever's latency removed and its accuracy and gold log-prob
cost against the sequential agreement relay (the live ``sequential`` run when listed).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from selector.agents import Agent
from selector.cmdline import parse_config, run_command
from selector.data import load_examples
from selector.dtype_choice import FASTEST, fastest_dtype, report
from selector.early_stop import STOP_SIGNALS
from selector.evaluation import RELAY_GATES, EvalConfig, run_eval
from selector.evaluation.cache import digest
from selector.evaluation.calibrate import CalibrateConfig, TargetUnreachable, calibrate, tau_frontier
from selector.evaluation.report import condition_metrics, pareto_front
from selector.progress import progress_bar
from selector.relay import Relay, RelayConfig, RelayResult, StageStats
from selector.relay_config import DTYPE_CHOICES

from .latency_report import markdown, paired_with_own, write_report

PROG = "python -m scripts.bench_latency"
CALIBRATION_TARGETS = ("always", "large_reasoning")
LEVER_PARTS = ("concurrent", "calibrated", *(f"stop={s}" for s in STOP_SIGNALS if s != "none"))


@dataclass
class BenchLatencyConfig:
    """Latency benchmark: accuracy vs measured end-to-end latency for the baselines, gates and levers."""

    relay: RelayConfig = field(default_factory=lambda: RelayConfig(batch_size=1, device="cpu"))
    """The relay measured (models, selector, budget, tau, tokens, the early-stop threshold, threads, device),
    at batch size 1; its gate, concurrent and early_stop are set by each row and lever, not here."""
    data: str | None = None
    """Held-out test questions with gold answers (never used to calibrate or to train the selector)."""
    dev_data: str | None = None
    """Development questions for calibrating tau (none: the calibrated lever uses relay.tau)."""
    out: str = "runs/bench_latency"
    """Output folder: eval/ and dev_eval/ (with their caches), live/, latency.{json,md,png}."""
    seed_cache: str | None = None
    """An earlier `tokenrelay eval` folder on the same test questions and models whose cache/ seeds
    OUT/eval/cache when that does not exist yet (copied, never written): its outputs are not recomputed."""
    limit: int | None = None
    """Use only the first N test questions."""
    dev_limit: int | None = None
    """Use only the first N dev questions."""
    gates: list[str] = field(default_factory=lambda: ["always", "agreement", "confidence"])
    """Gates of the sequential relay rows (from the evaluation engine)."""
    target_accuracy: float | None = None
    """Calibration target on the dev split (default: the dev accuracy of always transferring)."""
    levers: list[str] = field(
        default_factory=lambda: [
            "sequential", "concurrent", "stop=confidence", "stop=agreement", "calibrated", "concurrent+stop=agreement",
            "concurrent+calibrated", "concurrent+stop=agreement+calibrated",
        ]
    )  # fmt: skip
    """Live relay runs: 'sequential' (none: the reference), or parts concurrent, calibrated,
    stop=confidence|agreement|selector|head joined by '+'."""
    large_reason_tokens: int = 384
    """Cap on the large model's own reasoning tokens."""
    large_reason_dtype: str | None = None
    """Dtype of the large model's own-reasoning baseline (None: relay.dtype), so the baseline runs at its own
    fastest dtype: on a CPU with bfloat16 but no float16 units the relay's prefill-bound large stages are
    fastest in bfloat16, a decode-bound reasoning in float16 (scripts.bench_dtype); ``fastest`` measures it as
    a reasoning workload (selector.dtype_choice). Loads the large model a second time when it differs from the
    relay's; its outputs go to OUT/own_eval (and OUT/dev_own_eval)."""
    calibrate_to: str = "always"
    """Calibration target when target_accuracy is not given: 'always' (the dev accuracy of always
    transferring) or 'large_reasoning' (the large model's own accuracy on the dev questions, which it then
    reasons on too, at large_reason_dtype): the fastest relay as accurate as the large model's own reasoning."""
    stop_head: str | None = None
    """The stop-head folder of the ``stop=head`` levers (``scripts/train_stop_head.py``); relay.stop_head stays
    unset, as relay.early_stop does."""
    calibration_margin: float = 0.0
    """The calibrated tau must reach the target plus this on the dev questions (0-1; `tokenrelay calibrate`'s
    accuracy_margin): a target met exactly on a few dozen dev questions is often missed on the test."""

    def __post_init__(self) -> None:
        if not self.data or not str(self.data).strip():
            raise ValueError("--data is required")
        for name in ("small", "large"):
            if not getattr(self.relay, name):
                raise ValueError(f"--relay.{name} is required")
        if self.relay.batch_size != 1:
            raise ValueError(
                "the latency benchmark runs at batch size 1 (per-question latency): relay.batch_size 1"
            )
        if self.relay.concurrent or self.relay.early_stop != "none":
            raise ValueError(
                "relay.concurrent and relay.early_stop are set per lever (see levers), not in relay"
            )
        for lever in self.levers:
            if lever == "sequential":
                continue
            parts = lever.split("+")
            bad = [p for p in parts if p not in LEVER_PARTS]
            if bad or len(set(parts)) != len(parts):
                raise ValueError(f"bad lever {lever!r}: join distinct parts of {LEVER_PARTS} with '+'")
            if sum(p.startswith("stop=") for p in parts) > 1:
                raise ValueError(f"lever {lever!r} names more than one early-stop signal")
        wants_head = any("stop=head" in lever.split("+") for lever in self.levers)
        if wants_head != bool(self.stop_head):
            raise ValueError(
                "the stop=head levers need stop_head (a stop-head folder)"
                if wants_head
                else "stop_head is only read by stop=head levers: none is listed"
            )
        if len(set(self.levers)) != len(self.levers):
            raise ValueError("levers lists a lever more than once")
        bad_gates = [g for g in self.gates if g not in RELAY_GATES]
        if bad_gates:
            raise ValueError(f"unknown gate(s) {bad_gates}; expected some of {', '.join(RELAY_GATES)}")
        if self.target_accuracy is not None and not 0 <= self.target_accuracy <= 1:
            raise ValueError(f"target_accuracy must be in [0, 1], got {self.target_accuracy}")
        if not (math.isfinite(self.calibration_margin) and 0 <= self.calibration_margin < 1):
            raise ValueError(f"calibration_margin must be in [0, 1), got {self.calibration_margin}")
        if self.calibrate_to not in CALIBRATION_TARGETS:
            raise ValueError(f"calibrate_to must be one of {CALIBRATION_TARGETS}, got {self.calibrate_to!r}")
        if self.large_reason_dtype is not None and self.large_reason_dtype not in DTYPE_CHOICES:
            raise ValueError(
                f"large_reason_dtype must be one of {list(DTYPE_CHOICES)}, got {self.large_reason_dtype!r}"
            )
        # Every relay setting is checked now, before any model loads.
        for lever in self.levers:
            self.lever_config(lever, self.relay.tau)
        self.eval_config()

    def resolve_dtypes(self, log: Callable[[str], None] | None = report) -> BenchLatencyConfig:
        """This config with ``fastest`` measured: the relay's models for their jobs, and the large model's own
        reasoning (``large_reason_dtype``) as a reasoning workload, so the baseline is at its fastest too."""
        own = self.large_reason_dtype
        if own == FASTEST:
            choice = fastest_dtype(self.relay.large, "reason", device=self.relay.device, log=log)
            if log is not None:
                log(f"dtype fastest, the large model's own reasoning: {choice.summary()}")
            own = choice.dtype
        return replace(self, relay=self.relay.resolve_dtypes(log), large_reason_dtype=own)

    @property
    def separate_own(self) -> bool:
        """The large model's own reasoning runs at another dtype than the relay's large model."""
        return self.large_reason_dtype is not None and self.large_reason_dtype != self.relay.dtype

    def eval_config(self, dev: bool = False) -> EvalConfig:
        fixed = self.relay.selector in ("none", "full")
        own = [] if self.separate_own else ["large_reasoning"]
        if dev:
            conditions = ["large_direct", *(own if self.calibrate_to == "large_reasoning" else []), "relay"]
        else:
            conditions = ["large_direct", *own, "small_reasoning", "relay"]
        return EvalConfig(
            data=self.dev_data if dev else self.data,
            limit=self.dev_limit if dev else self.limit,
            relay=replace(self.relay, budget=None),
            out=str(Path(self.out) / ("dev_eval" if dev else "eval")),
            selectors=[self.relay.selector],
            budgets=[] if fixed else [self.relay.budget_value],
            gates=["always"] if dev else list(self.gates),
            conditions=conditions,
            large_reason_tokens=self.large_reason_tokens,
            plot=False,
        )  # fmt: skip

    def own_eval_config(self, dev: bool = False) -> EvalConfig:
        """The large model's own reasoning at large_reason_dtype (with separate_own)."""
        return EvalConfig(
            data=self.dev_data if dev else self.data,
            limit=self.dev_limit if dev else self.limit,
            relay=replace(self.relay, dtype=self.large_reason_dtype, small_dtype=None, budget=None),
            out=str(Path(self.out) / ("dev_own_eval" if dev else "own_eval")),
            conditions=["large_reasoning"],
            large_reason_tokens=self.large_reason_tokens,
            plot=False,
        )  # fmt: skip

    def lever_config(self, lever: str, tau: float) -> RelayConfig:
        parts = [] if lever == "sequential" else lever.split("+")
        stop = next((p.split("=", 1)[1] for p in parts if p.startswith("stop=")), "none")
        return replace(
            self.relay, gate="confidence" if "calibrated" in parts else "agreement", tau=tau,
            concurrent="concurrent" in parts, early_stop=stop, score_gold=True,
            stop_head=self.stop_head if stop == "head" else None,
        )  # fmt: skip


def config_from_yaml(path: str) -> BenchLatencyConfig:
    """Build the config of a YAML file without running it (tests/test_configs.py)."""
    return parse_config(BenchLatencyConfig, ["--config", str(path)], PROG)


def _live(name: str, relay: Relay, examples, out: Path, bar) -> tuple[list[RelayResult], list[float | None]]:
    """Run the relay per question, appending each result to ``out`` (a rerun skips what is there).

    Also returns each question's wall time around the whole relay call (``wall_s`` in the file; None in
    files from before it was kept): it includes the gold scoring the latency leaves out, so it is an upper
    bound that shows any work the stage times miss."""
    done: dict[str, RelayResult] = {}
    wall: dict[str, float | None] = {}
    if out.exists():
        for line in out.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                wall[rec["id"]] = rec.pop("wall_s", None)
                rec["stages"] = {k: StageStats(**v) for k, v in rec["stages"].items()}
                done[rec["id"]] = RelayResult(**rec)
    task = bar.add_task(f"live: {name}", total=len(examples))
    for ex in examples:
        if ex.id not in done:
            started = time.perf_counter()
            r = relay.run([ex], progress=False)[0]
            wall[ex.id] = time.perf_counter() - started
            with out.open("a") as f:
                f.write(json.dumps({**r.to_record(), "wall_s": wall[ex.id]}) + "\n")
            done[ex.id] = r
        bar.advance(task)
    return [done[ex.id] for ex in examples], [wall[ex.id] for ex in examples]


def _row(name: str, kind: str, metrics: dict, threads: dict, levers: str | None = None) -> dict:
    keep = ("n", "accuracy", "gold_logprob", "transfer_rate", "end_to_end", "latency")
    return {"condition": name, "title": name, "kind": kind, "levers": levers, "threads": threads,
            **{k: metrics[k] for k in keep}}  # fmt: skip


def run_bench(
    config: BenchLatencyConfig, agents: tuple[Agent, Agent] | None = None, progress: bool = True
) -> dict:
    started = time.perf_counter()
    out = Path(config.out)
    cores = torch.get_num_threads()
    if config.seed_cache and not (out / "eval" / "cache").exists():  # before any model loads
        if not (Path(config.seed_cache) / "cache").is_dir():
            raise FileNotFoundError(
                f"seed_cache {config.seed_cache!r} has no cache/ folder (a `tokenrelay eval` --out)"
            )
        (out / "eval").mkdir(parents=True, exist_ok=True)
        shutil.copytree(Path(config.seed_cache) / "cache", out / "eval" / "cache")
    if agents is None:  # `fastest` dtypes measured (or read from this machine's cache) before loading
        config = config.resolve_dtypes()
        agents = (
            Agent.from_pretrained(config.relay.small, **config.relay.load_kwargs("small")),
            Agent.from_pretrained(config.relay.large, **config.relay.load_kwargs("large")),
        )
    small, large = agents
    # 1. baselines and the sequential relay per gate, from the evaluation engine
    ev = run_eval(config.eval_config(), agents=agents, progress=progress)
    records: dict[str, list[dict]] = {}
    for line in (out / "eval" / "records.jsonl").read_text().splitlines():
        rec = json.loads(line)
        records.setdefault(rec["condition"], []).append(rec)
    # Rows from the engine carry the timings of their cache: with a seed cache, another run's threads.
    seq_threads = {
        "large": "seed" if config.seed_cache else cores,
        "small": "seed" if config.seed_cache else cores,
    }
    rows = [_row(r["title"], r["kind"], r, seq_threads) for r in ev["rows"]]
    # Per question (correct, seconds) of every row, for the paired comparison with the large model's own reasoning.
    per_question = {
        r["title"]: [(rec["correct"], rec["latency_s"]) for rec in records.get(r["condition"], [])]
        for r in ev["rows"]
    }
    own_large = None
    if config.separate_own:  # the baseline at its own dtype: a second copy of the large model
        own_large = Agent.from_pretrained(
            config.relay.large, dtype=config.large_reason_dtype, device=config.relay.device
        )
        own_ev = run_eval(config.own_eval_config(), agents=(None, own_large), progress=progress)
        own_row = next(r for r in own_ev["rows"] if r["kind"] == "large_reasoning")
        title = f"{own_row['title']} ({config.large_reason_dtype})"
        # measured in this run whatever seed_cache says (the seed only fills OUT/eval)
        rows.insert(1, _row(title, "large_reasoning", own_row, {"large": cores, "small": cores}))
        own_records = (out / "own_eval" / "records.jsonl").read_text().splitlines()
        per_question[title] = [(rec["correct"], rec["latency_s"]) for rec in map(json.loads, own_records)]
    # The levers are compared with the live sequential agreement relay (else the engine's row).
    reference = next((r for r in rows if r["kind"] == "relay" and "(agreement)" in r["title"]), None)
    # 2. calibration on the dev split
    tau, calibration, target, unreachable = config.relay.tau, None, None, None
    levers = list(config.levers)
    if config.dev_data and any("calibrated" in lever for lever in config.levers):
        dev = run_eval(config.eval_config(dev=True), agents=agents, progress=progress)
        target = config.target_accuracy
        if target is None and config.calibrate_to == "large_reasoning":
            if own_large is not None:
                dev = run_eval(config.own_eval_config(dev=True), agents=(None, own_large), progress=progress)
            target = next(r["accuracy"] for r in dev["rows"] if r["kind"] == "large_reasoning")
        elif target is None:
            target = next(r["accuracy"] for r in dev["rows"] if r["kind"] == "relay")
        try:
            calibration = calibrate(
                CalibrateConfig(eval=str(out / "dev_eval"), target_accuracy=target,
                                out=str(out / "calibrated_relay.yaml"), accuracy_margin=config.calibration_margin)
            )  # fmt: skip
            tau = calibration["chosen"]["tau"]
        except TargetUnreachable as err:  # a finding about the pair on this task: report it, run the rest
            unreachable = str(err)
            levers = [lever for lever in levers if "calibrated" not in lever]
            # an earlier run's choice in this folder is not this run's
            (out / "calibrated_relay.yaml").unlink(missing_ok=True)
            print(f"calibration: {unreachable}; the calibrated levers are not run", file=sys.stderr)
    # 3. the levers, live
    examples = load_examples(config.data, limit=config.limit)
    first = records["large_direct"]
    f_none = [r["f_none"] for r in first]
    f_all = [r["f_all"] for r in first]
    (out / "live").mkdir(parents=True, exist_ok=True)
    with progress_bar(disable=not progress) as bar:
        for lever in levers:
            relay_config = config.lever_config(lever, tau)
            relay = Relay(small, large, relay_config.selector, relay_config)
            # One file per lever and settings: a changed tau or threshold never resumes another's results;
            # a larger --limit resumes it (results are per question).
            # Keyed with the budget and units in force, so `null` / `auto` and their values share a file.
            settings = replace(relay_config, budget=relay_config.budget_value, granularity=relay.granularity)
            path = out / "live" / f"{lever}-{digest(asdict(settings), config.data)[:10]}.jsonl"
            results, walls = _live(lever, relay, examples, path, bar)
            large_t, small_t = relay.threads if relay.config.concurrent else (cores, cores)
            metrics = condition_metrics(results, f_none, f_all, 1.0, True)
            row = _row(f"relay {lever}", "lever", metrics, {"large": large_t, "small": small_t}, lever)
            timed = [w for w in walls if w is not None]
            row["wall_s"] = sum(timed) / len(timed) if len(timed) == len(walls) and timed else None
            rows.append(row)
            per_question[row["title"]] = [(r.correct, r.latency_s) for r in results]
            if lever == "sequential":
                reference = row
    for row in rows:
        if row["kind"] == "lever" and reference is not None and row is not reference:
            row["vs_sequential"] = {
                "latency_removed_s": reference["end_to_end"] - row["end_to_end"],
                "accuracy_change": row["accuracy"] - reference["accuracy"],
                "gold_logprob_change": (row["gold_logprob"] or 0) - (reference["gold_logprob"] or 0),
            }
    own = next((r for r in rows if r["kind"] == "large_reasoning"), None)
    for r in rows:
        r["ratio_to_large_reasoning"] = (
            r["end_to_end"] / own["end_to_end"] if own and own["end_to_end"] else None
        )
    # The acceptance question: the fastest configuration at least as accurate as the large model's own reasoning.
    best = None
    if own is not None:
        ok = [r for r in rows if r["kind"] != "large_reasoning" and r["accuracy"] >= own["accuracy"]]
        if ok:
            b = min(ok, key=lambda r: r["end_to_end"])
            best = {"condition": b["title"], "accuracy": b["accuracy"], "end_to_end": b["end_to_end"],
                    "ratio_to_large_reasoning": b["ratio_to_large_reasoning"], "large_reasoning_accuracy": own["accuracy"],
                    **paired_with_own(per_question.get(b["title"], []), per_question.get(own["title"], []))}  # fmt: skip
    gate_front = _gate_front(records, own)
    front = pareto_front([(r["end_to_end"], r["accuracy"]) for r in rows])
    for i, r in enumerate(rows):
        r["pareto"] = i in front
    result = {
        "questions": len(examples), "data": config.data, "dev_data": config.dev_data, "small": config.relay.small,
        "large": config.relay.large, "cores": cores, "tau": tau, "calibration": calibration and calibration["chosen"],
        "calibration_interval": calibration and calibration["accuracy_interval"],
        "calibration_margin": config.calibration_margin, "calibration_unreachable": unreachable,
        "calibration_target_accuracy": target,
        "seconds": time.perf_counter() - started, "best": best, "config": asdict(config), "rows": rows,
        "gate_frontier": gate_front,
    }  # fmt: skip
    write_report(result, out)
    return result


def _gate_front(records: dict[str, list[dict]], own: dict | None) -> list[dict] | None:
    """The confidence gate at every tau on these questions, from the engine's large_direct and always-transfer
    rows (sequential stage times): its Pareto points with their ratio to the large model's own reasoning.
    None without an always-transfer row or the own-reasoning baseline."""
    always = next((c for c in records if c.startswith("relay:") and c.endswith(":always")), None)
    if always is None or "large_direct" not in records or not own or not own["end_to_end"]:
        return None
    direct = {r["id"]: r for r in records["large_direct"]}
    transfer = {r["id"]: r for r in records[always]}
    return [dict(c.__dict__, ratio_to_large_reasoning=c.latency / own["end_to_end"])
            for c in tau_frontier(direct, transfer, always)]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    def body() -> None:
        config = parse_config(BenchLatencyConfig, argv, PROG)
        result = run_bench(config)
        print(markdown(result))
        print(
            f"\nwritten: {Path(config.out) / 'latency.json'}, latency.md, latency.png ({result['seconds']:.0f} s)"
        )

    return run_command(body, PROG)


if __name__ == "__main__":
    sys.exit(main())
