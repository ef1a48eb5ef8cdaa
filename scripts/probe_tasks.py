"""Which tasks leave room for a relay? Probe reasoning-gym task settings on a model pair.

For each task setting: the small model reasons over N problems (``tokenrelay reason``, so the
traces can later be labelled and trained on), then the large model answers each problem directly
and scores the gold answer with no transfer (f(none)) and with the full reasoning (f(all)). A
problem *gains* when f(all) - f(none) >= --min-gain nats and is *hurt* when it is <= -min-gain.

    python -m scripts.probe_tasks --small models/qwen2.5-coder-0.5b-instruct \\
        --large models/qwen2.5-coder-1.5b-instruct --out runs/probe --n 8 --offset 100 \\
        --task simple_equations:max_terms=3,max_value=30 --task leg_counting:max_animals=4 \\
        --reason-tokens 256

Everything is cached under --out (traces per task, one probe record per problem): a rerun or a
larger --n computes only what is new. Writes probe.md and probe.json (the table), and prints it.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

from scripts.prepare_data import _parse_config, reasoning_gym_rows
from selector.io import write_json_atomic

MIN_GAIN = 1.0


def parse_spec(spec: str) -> tuple[str, dict]:
    """'task:key=val,key=val' -> (task, config)."""
    task, _, rest = spec.partition(":")
    pairs = [p for p in rest.split(",") if p]
    return task, _parse_config(pairs)


def spec_name(task: str, config: dict) -> str:
    return task + "".join(f"-{k}{v}" for k, v in sorted(config.items()))


def _load_probe(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            out[rec["id"]] = rec
    return out


def probe_traces(large, traces, path: Path, answer_tokens: int = 16) -> dict[str, dict]:
    """f(none), f(all) and the large model's direct answer for each trace (cached in ``path``)."""
    from selector.answers import answers_match
    from selector.gating import answer_from_generation
    from selector.prompts import answer_target, transfer_prompt

    done = _load_probe(path)
    with path.open("a") as fh:
        for rec in traces:
            rid = str(rec["id"])
            if rid in done:
                continue
            t0 = time.perf_counter()
            direct = transfer_prompt(large, rec["question"], None)
            target = answer_target(str(rec["answer"]))
            gens, scores = large.answer_and_score([direct.as_pair()], [target], max_new_tokens=answer_tokens)
            reasoning = rec.get("reasoning") or ""
            f_all = scores[0].logprob
            if reasoning.strip():
                full = transfer_prompt(large, rec["question"], reasoning)
                f_all = large.score([full.as_pair()], target)[0].logprob
            direct_answer = answer_from_generation(gens[0].text)
            out = {
                "id": rid,
                "f_none": scores[0].logprob,
                "f_all": f_all,
                "large_direct_answer": direct_answer,
                "large_direct_correct": answers_match(direct_answer, str(rec["answer"])),
                "small_correct": bool(rec.get("small_correct")),
                "small_tokens": int(rec.get("new_tokens") or 0),
                "capped": rec.get("finish_reason") == "length",
                "seconds": time.perf_counter() - t0,
            }
            fh.write(json.dumps(out) + "\n")
            fh.flush()
            done[rid] = out
    return done


def summarize(name: str, task: str, config: dict, records: list[dict], min_gain: float) -> dict:
    deltas = [r["f_all"] - r["f_none"] for r in records]
    n = len(records)
    return {
        "setting": name,
        "task": task,
        "config": config,
        "problems": n,
        "gain_share": sum(d >= min_gain for d in deltas) / n if n else None,
        "hurt_share": sum(d <= -min_gain for d in deltas) / n if n else None,
        "median_delta": statistics.median(deltas) if n else None,
        "small_acc": sum(r["small_correct"] for r in records) / n if n else None,
        "large_direct_acc": sum(r["large_direct_correct"] for r in records) / n if n else None,
        "capped_share": sum(r["capped"] for r in records) / n if n else None,
        "median_small_tokens": statistics.median(r["small_tokens"] for r in records) if n else None,
    }


def markdown(rows: list[dict], min_gain: float) -> str:
    head = (
        f"| setting | n | gains (>= {min_gain:g} nat) | hurt | median f(all)-f(none) | small acc | "
        "large direct acc | capped | median small tokens |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['setting']} | {r['problems']} | {r['gain_share']:.0%} | {r['hurt_share']:.0%} | "
        f"{r['median_delta']:+.2f} | {r['small_acc']:.0%} | {r['large_direct_acc']:.0%} | "
        f"{r['capped_share']:.0%} | {r['median_small_tokens']:.0f} |"
        for r in rows
        if r["problems"]
    ]
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", required=True, help="small (reasoning) model folder")
    ap.add_argument("--large", required=True, help="large (answering) model folder")
    ap.add_argument("--out", required=True, help="output folder (cache, traces, table)")
    ap.add_argument("--task", action="append", required=True, help="TASK[:key=val,...] (repeatable)")
    ap.add_argument("--n", type=int, default=8, help="problems per task setting")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--offset", type=int, default=100, help="first item (keep evaluation items apart)")
    ap.add_argument("--reason-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8, help="small-model generation batch")
    ap.add_argument("--hidden-layer", type=int, default=-1, help="hidden states kept in the traces")
    ap.add_argument("--min-gain", type=float, default=MIN_GAIN)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args(argv)
    if args.n < 1 or args.reason_tokens < 1:
        ap.error("--n and --reason-tokens must be >= 1")

    from selector.agents import Agent
    from selector.traces import ReasonConfig, load_traces, run_reason

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = []
    for task, config in (parse_spec(s) for s in args.task):
        name = spec_name(task, config)
        folder = out / name
        folder.mkdir(exist_ok=True)
        items = reasoning_gym_rows(task, args.n, seed=args.seed, offset=args.offset, config=config)
        for it in items:
            it["task_setting"] = name
        (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
        settings.append((name, task, config, folder, {r["id"] for r in items}))
    # One model in memory at a time: every setting's reasoning first, then the large model's probe.
    small = Agent.from_pretrained(args.small, dtype=args.dtype, device="cpu")
    for name, _, _, folder, _ in settings:
        print(f"reasoning: {name}", flush=True)
        run_reason(
            ReasonConfig(
                data=str(folder / "data.jsonl"),
                model=args.small,
                out=str(folder / "traces"),
                batch_size=args.batch_size,
                max_new_tokens=args.reason_tokens,
                hidden_layer=args.hidden_layer,
            ),
            agent=small,
        )
    del small
    gc.collect()
    large = Agent.from_pretrained(args.large, dtype=args.dtype, device="cpu")
    rows = []
    for name, task, config, folder, ids in settings:
        traces = [t for t in load_traces(folder / "traces").to_list() if t["id"] in ids]
        probed = probe_traces(large, traces, folder / "probe.jsonl")
        rows.append(
            summarize(name, task, config, [probed[i] for i in sorted(ids) if i in probed], args.min_gain)
        )
        table = markdown(rows, args.min_gain)
        (out / "probe.md").write_text(table)
        write_json_atomic(out / "probe.json", {"args": vars(args), "rows": rows})
        print(table, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
