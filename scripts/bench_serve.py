"""Load benchmark of `tokenrelay serve`: N concurrent clients, answered / lost, p50 / p95 latency, throughput.

    python -m scripts.bench_serve --config configs/serve.yaml --clients 1 4 8 --requests 48

Starts `tokenrelay serve` with ``--config`` on a free port (or uses a running server: ``--url``),
then for each client count sends ``--requests`` chat requests (held-out questions of the demo's
synthetic world, with their gold answers) through the official ``openai`` client from that many
threads. A request is *answered* when it returns 200 with an answer, *lost* otherwise (error or
timeout). Latency is each request's wall time at the client; throughput is answered requests per
second of the level's wall time. Prints a table and writes JSON (``--out``).

    python -m scripts.bench_serve --engine-url http://127.0.0.1:8001/v1 --engine-model NAME \
        --model-dir path/to/model --requests 8

instead compares the relay's per-question latency with the model in-process and behind an
OpenAI-compatible engine (vLLM, docs/serving.md) serving the same weights, in one run: the model
is both small and large, selfinfo selector, gate always, batch size 1, greedy; it also counts
the questions whose answer and transfer are identical both ways. With ``--small-dir`` the model is
only the *large* one, and an in-process small model (that folder) reasons in both runs: the real
deployment, where the large model sits behind the engine. ``--data`` takes questions from a JSONL
file (``scripts/prepare_data.py``) instead of the synthetic world.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from selector.answers import answers_match
from selector.demo.synthetic import generate_problems
from selector.io import write_json_atomic

ROOT = Path(__file__).resolve().parent.parent


def start_server(config: str, log: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    """`tokenrelay serve --config CONFIG --port 0`; returns the process and its /v1 URL once it listens."""
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "selector.cli", "serve", "--config", config, "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        cwd=ROOT,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        raise SystemExit(f"bench_serve: the server did not start (see {log}):\n{log.read_text()[-2000:]}")
    return proc, line.split()[-1]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_level(url: str, clients: int, problems: list, knobs: dict, timeout: float) -> dict:
    """Send every problem once from ``clients`` threads; per-request outcome and timing."""
    import openai

    client = openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=timeout)
    todo = list(enumerate(problems))
    lock = threading.Lock()
    records: list[dict] = []

    def worker() -> None:
        while True:
            with lock:
                if not todo:
                    return
                i, problem = todo.pop(0)
            t0 = time.perf_counter()
            record = {"i": i, "ok": False}
            try:
                resp = client.chat.completions.create(
                    model="tokenrelay",
                    messages=[{"role": "user", "content": problem.question}],
                    extra_body=knobs or None,
                )
                report = resp.tokenrelay
                answer = resp.choices[0].message.content
                record.update(
                    ok=answer is not None,
                    correct=answers_match(answer, problem.answer),
                    path=report["path"],
                    fallback=report["fallback"] is not None,
                    transfer_tokens=report["transfer_tokens"],
                    batch_size=report["batch_size"],
                    queue_s=report["queue_s"],
                )
            except Exception as err:  # a lost request: keep why
                record["error"] = f"{type(err).__name__}: {err}"
            record["seconds"] = time.perf_counter() - t0
            with lock:
                records.append(record)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ok = [r for r in records if r["ok"]]
    lat = [r["seconds"] for r in ok]
    return {
        "clients": clients,
        "requests": len(problems),
        "answered": len(ok),
        "lost": len(problems) - len(ok),
        "errors": sorted({r["error"] for r in records if "error" in r})[:5],
        "p50_s": percentile(lat, 0.5),
        "p95_s": percentile(lat, 0.95),
        "mean_s": statistics.fmean(lat) if lat else None,
        "throughput_rps": len(ok) / wall if wall > 0 else None,
        "wall_s": wall,
        "accuracy": statistics.fmean(r["correct"] for r in ok) if ok else None,
        "transfer_rate": statistics.fmean(r["path"] == "transfer" for r in ok) if ok else None,
        "fallbacks": sum(r.get("fallback", False) for r in ok),
        "mean_batch": statistics.fmean(r["batch_size"] for r in ok) if ok else None,
        "mean_queue_s": statistics.fmean(r["queue_s"] for r in ok) if ok else None,
    }


def table(rows: list[dict]) -> str:
    head = "| clients | requests | answered | lost | p50 s | p95 s | req/s | mean batch | queue s | accuracy | transfer |"
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]

    def f(x, spec=".3f"):
        return "" if x is None else format(x, spec)

    for r in rows:
        lines.append(
            f"| {r['clients']} | {r['requests']} | {r['answered']} | {r['lost']} | {f(r['p50_s'])} | {f(r['p95_s'])} "
            f"| {f(r['throughput_rps'], '.2f')} | {f(r['mean_batch'], '.2f')} | {f(r['mean_queue_s'])} "
            f"| {f(r['accuracy'], '.1%')} | {f(r['transfer_rate'], '.0%')} |"
        )
    return "\n".join(lines)


def engine_comparison(args, problems: list) -> dict:
    """Relay latency per question, in-process vs through the engine, on the same questions."""
    import torch

    from selector.agents import Agent
    from selector.data import Example
    from selector.relay import Relay, RelayConfig
    from selector.remote import RemoteAgent, RemoteConfig

    local = Agent.from_pretrained(args.model_dir, device="cpu", dtype="float32")
    small_agent = (
        Agent.from_pretrained(args.small_dir, device="cpu", dtype="float32") if args.small_dir else None
    )
    remote = RemoteAgent(
        RemoteConfig(base_url=args.engine_url, model=args.engine_model, tokenizer=args.model_dir)
    )
    config = RelayConfig(
        gate="always",
        selector="selfinfo",
        granularity="sentence",
        batch_size=1,
        reason_tokens=args.reason_tokens,
    )
    examples = [p if isinstance(p, Example) else Example(p.id, p.question, p.answer) for p in problems]
    rows, answers = [], {}
    for name, agent in (("in-process", local), ("engine", remote)):
        relay = Relay(agent if small_agent is None else small_agent, agent, "selfinfo", config)
        relay.run(examples[:1], progress=False)  # warm-up
        seconds, results = [], []
        for ex in examples:
            t0 = time.perf_counter()
            results += relay.run([ex], progress=False)
            seconds.append(time.perf_counter() - t0)
        answers[name] = [(r.answer, r.transfer_text) for r in results]
        small = [r.stages["small_reasoning"].seconds for r in results]
        rows.append(
            {
                "where": name,
                "accuracy": statistics.fmean(
                    float(answers_match(r.answer, ex.answer)) for r, ex in zip(results, examples)
                ),
                "questions": len(examples),
                "p50_s": percentile(seconds, 0.5),
                "p95_s": percentile(seconds, 0.95),
                "mean_s": statistics.fmean(seconds),
                "mean_small_reasoning_s": statistics.fmean(small),
                "mean_reasoning_tokens": statistics.fmean(
                    r.stages["small_reasoning"].new_tokens for r in results
                ),
            }
        )
    same = sum(a == b for a, b in zip(answers["in-process"], answers["engine"]))
    return {
        "model_dir": args.model_dir,
        "small_dir": args.small_dir,
        "data": args.data,
        "torch_threads": torch.get_num_threads(),
        "engine_url": args.engine_url,
        "rows": rows,
        "identical_answers": same,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--config", default=str(ROOT / "configs" / "serve.yaml"), help="serve config to start"
    )
    parser.add_argument("--url", default=None, help="use a running server's /v1 URL instead of starting one")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8], help="concurrent client counts")
    parser.add_argument("--requests", type=int, default=48, help="requests per client count")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the synthetic questions")
    parser.add_argument("--gate", default=None, help="per-request gate (default: the server's)")
    parser.add_argument("--budget", type=float, default=None, help="per-request budget")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds before a request counts as lost"
    )
    parser.add_argument("--out", default="runs/bench_serve.json", help="JSON results")
    parser.add_argument("--serve-arg", action="append", default=[], help="extra option for tokenrelay serve")
    parser.add_argument("--engine-url", default=None, help="compare in-process vs this engine's /v1 URL")
    parser.add_argument("--engine-model", default=None, help="the engine's model name (with --engine-url)")
    parser.add_argument(
        "--model-dir", default=None, help="the engine's model as a local folder (with --engine-url)"
    )
    parser.add_argument(
        "--reason-tokens", type=int, default=256, help="small model's cap (with --engine-url)"
    )
    parser.add_argument(
        "--small-dir",
        default=None,
        help="an in-process small model; the engine's model is then only the large one",
    )
    parser.add_argument(
        "--data", default=None, help="questions from this JSONL (default: the synthetic world)"
    )
    args = parser.parse_args(argv)
    if args.engine_url is not None:
        if not (args.engine_model and args.model_dir):
            parser.error("--engine-url needs --engine-model and --model-dir")
        if args.data:
            from selector.data import load_examples

            problems = load_examples(args.data, limit=args.requests)
        else:
            problems = generate_problems(args.requests, seed=args.seed)
        result = engine_comparison(args, problems)
        print(
            "| where | questions | accuracy | p50 s | p95 s | mean s | small reasoning s | reasoning tokens |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in result["rows"]:
            print(
                f"| {r['where']} | {r['questions']} | {r['accuracy']:.1%} | {r['p50_s']:.3f} | {r['p95_s']:.3f} | {r['mean_s']:.3f} "
                f"| {r['mean_small_reasoning_s']:.3f} | {r['mean_reasoning_tokens']:.1f} |"
            )
        print(
            f"identical answers and transfers: {result['identical_answers']}/{result['rows'][0]['questions']}"
        )
        write_json_atomic(args.out, result)
        print(f"written to {args.out}")
        return 0
    if args.requests < 1 or any(c < 1 for c in args.clients):
        parser.error("--requests and --clients must be >= 1")
    knobs = {k: v for k, v in (("gate", args.gate), ("budget", args.budget)) if v is not None}
    problems = generate_problems(args.requests, seed=args.seed)
    out = Path(args.out)
    proc = None
    url = args.url
    if url is None:
        proc, url = start_server(args.config, out.with_suffix(".server.log"), args.serve_arg)
    try:
        run_level(url, 1, problems[:2], knobs, args.timeout)  # warm-up, not counted
        rows = []
        for clients in args.clients:
            rows.append(run_level(url, clients, problems, knobs, args.timeout))
            print(
                f"clients={clients}: {rows[-1]['answered']}/{rows[-1]['requests']} answered", file=sys.stderr
            )
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    print(table(rows))
    result = {
        "config": args.config if args.url is None else None,
        "url": args.url,
        "knobs": knobs,
        "seed": args.seed,
        "cpu_count": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "rows": rows,
    }
    write_json_atomic(out, result)
    print(f"written to {out}")
    return 0 if all(r["lost"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
