"""Benchmark the labelers on a real pair: agreement with leave-one-out, cost, gain recovered, leakage.

    python -m scripts.bench_labels --traces runs/traces --model models/qwen2.5-coder-1.5b-instruct \\
        --out runs/bench_labels --units sentence,word --masks 8,16,32 --max-traces 10

Per trace on which the full transfer raises the large model's gold log-prob by >= --min-gain nats,
and per unit granularity, it runs ``loo`` (the reference), ``ablation`` at each m and ``gradient``,
and reports: Spearman against loo; large-model forward passes and wall time per trace; "gain
recovered at 25%" = (f(kept) - f(none)) / (f(all) - f(none)) when each labeler's own top units are
kept up to 25% of the reasoning tokens (``selector.selection.select_units``), beside random units at
the same budget; and how often the kept units contain the gold answer (leakage). It also measures
the scoring throughput on one trace (``--throughput-only`` measures just that): one mask at a time
vs ``Agent.score``'s prefix-tree walk (batch 1, and batches of ``--batch-size``), for random
ablation masks and for leave-one-out masks.

Everything is resumable: every f(S) is cached on disk per (trace id, granularity, mask) with the
time it cost, and per-trace results are saved, so a killed run loses at most one batch. Ablation
masks are drawn row by row from one seeded generator, so the first 8 masks of m = 32 are the masks
of m = 8: the m values share their f evaluations (the cache makes that free). Per-labeler "wall
time" is therefore an estimate for an uncached run: the recorded cost of every f value it used
(batch time split evenly over the batch's masks) plus, for gradient, the measured backward pass.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from collections.abc import MutableMapping
from pathlib import Path

import torch

from selector.agents import Agent
from selector.answers import contains_answer
from selector.io import write_json_atomic
from selector.selection import Budget, select_units
from selector.traces import load_traces
from selector.units import join_units, unit_token_counts
from training.label_job import unit_tokenizer
from training.labelers import (
    AblationLabeler,
    GradientLabeler,
    LabelInput,
    LooLabeler,
    SoloLabeler,
    TransferScorer,
    draw_masks,
    mask_key,
    spearman,
    top_agreement,
)


class DiskCache(MutableMapping):
    """A JSON file of mask key -> (f, seconds), rewritten atomically on every change."""

    def __init__(self, path: Path):
        self.path = path
        self.data = {k: tuple(v) for k, v in json.loads(path.read_text()).items()} if path.exists() else {}

    def __getitem__(self, key):
        return self.data[key]

    def __setitem__(self, key, value):
        self.data[key] = tuple(value)
        write_json_atomic(self.path, self.data, indent=1)

    def __delitem__(self, key):
        del self.data[key]
        write_json_atomic(self.path, self.data, indent=1)

    def __iter__(self):
        return iter(self.data)

    def __len__(self):
        return len(self.data)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _item(record, units, agent) -> LabelInput:
    """Token units are cut with the small model's tokenizer (the trace's ``model``), as in the relay."""
    tokenizer = unit_tokenizer(None, record, _TOKENIZERS) if units == "token" else None
    return LabelInput.from_trace(record, units, tokenizer)


_TOKENIZERS: dict = {}


def screen(agent, records, args, out: Path) -> list[dict]:
    """Traces whose full transfer raises f by >= min_gain (f(all), f(none) cached per trace)."""
    kept, info = [], []
    for rec in records:
        item = _item(rec, "sentence", agent)  # all/none prompts do not depend on the granularity
        # Sentence-unit keys; stored under "1" (all) and "0" (none), valid for every granularity.
        cache = DiskCache(out / "cache" / f"{_safe(item.id)}__screen.json")
        n = len(item.units)
        scorer = TransferScorer(agent, item, batch_size=args.batch_size)
        for key, mask in (("1", [True] * n), ("0", [False] * n)):
            if key in cache:
                scorer.cache[mask_key(mask)] = cache[key]
        f_all, f_none = scorer([[True] * n, [False] * n], ["all units", "no units"])
        cache["1"], cache["0"] = scorer.cache["1" * n], scorer.cache["0" * n]
        gain = f_all - f_none
        info.append({"id": item.id, "f_all": f_all, "f_none": f_none, "gain": gain})
        print(f"screen {item.id}: f(none)={f_none:.3f} f(all)={f_all:.3f} gain={gain:+.3f}", flush=True)
        if gain >= args.min_gain:
            kept.append(rec)
            if len(kept) >= args.max_traces:
                break
    write_json_atomic(out / "screen.json", info, indent=1)
    return kept


def bench_trace(agent, record, units: str, args, out: Path) -> dict:
    """All labelers on one trace at one granularity (cached; resumable)."""
    item = _item(record, units, agent)
    result_path = out / "results" / f"{_safe(item.id)}__{units}.json"
    if result_path.exists():
        done = json.loads(result_path.read_text())
        if set(_labeler_names(args)) <= set(done["labelers"]):
            return done  # else computed again for the new labelers; cached f values cost nothing
    cache = DiskCache(out / "cache" / f"{_safe(item.id)}__{units}.json")
    counts = unit_token_counts(item.reasoning, item.units, agent.tokenizer)
    n = len(item.units)
    screened = json.loads((out / "cache" / f"{_safe(item.id)}__screen.json").read_text())
    for key, mask in (("1" * n, "1"), ("0" * n, "0")):  # all and none were scored when screening
        if key not in cache and mask in screened:
            cache[key] = screened[mask]
    labelers = {"loo": LooLabeler(batch_size=args.batch_size)}  # the reference, always run
    labelers.update(_variants(args))
    scorer = TransferScorer(agent, item, batch_size=args.batch_size, cache=cache)
    rows = {}
    for name, labeler in labelers.items():
        res = labeler(agent, item, cache=cache)
        rows[name] = {
            "scores": res.scores,
            "f_all": res.f_all,
            "f_none": res.f_none,
            "fit_r2": res.fit_r2,
            "forward_passes": res.nominal_passes,
            "est_seconds": res.cost_s,
            "actual_seconds": res.seconds,
            "reliability": res.reliability,
            "reliability_kind": res.reliability_kind,
            "reliability_top": res.reliability_top,
        }
        print(f"  {item.id} {units} {name}: {res.nominal_passes} passes, ~{res.cost_s:.1f}s", flush=True)
    f_all, f_none = rows["loo"]["f_all"], rows["loo"]["f_none"]
    gain = f_all - f_none
    budget = Budget.ratio(args.budget)

    def kept_eval(mask):
        text = join_units(item.reasoning, item.units, mask)
        f = scorer([mask], ["kept at budget"])[0]
        return {
            "f_kept": f,
            "gain_recovered": (f - f_none) / gain if abs(gain) > 1e-9 else None,
            "leak": contains_answer(text, item.gold) if text else False,
            "kept_tokens": sum(c for c, k in zip(counts, mask) if k),
        }

    for name, row in rows.items():
        row["spearman_vs_loo"] = None if name == "loo" else spearman(row["scores"], rows["loo"]["scores"])
        row["top_vs_loo"] = None if name == "loo" else top_agreement(row["scores"], rows["loo"]["scores"])
        row.update(kept_eval(select_units(row["scores"], counts, budget)))
    rng = random.Random(f"{args.seed}:{item.id}:{units}")
    draws = []
    for _ in range(args.random_draws):
        draws.append(kept_eval(select_units([rng.random() for _ in counts], counts, budget)))
    rows["random"] = {
        "gain_recovered": _mean([d["gain_recovered"] for d in draws]),
        "leak": _mean([float(d["leak"]) for d in draws]),
        "kept_tokens": _mean([d["kept_tokens"] for d in draws]),
        "draws": draws,
    }
    result = {
        "id": item.id,
        "units": units,
        "n_units": len(item.units),
        "reasoning_tokens": sum(counts),
        "f_all": f_all,
        "f_none": f_none,
        "full_leaks": contains_answer(item.reasoning, item.gold),
        "labelers": rows,
    }
    write_json_atomic(result_path, result, indent=1)
    return result


def _variants(args) -> dict:
    """The labelers besides loo, by name: ablation at each m x keep probability (x antithetic),
    solo, gradient. The largest m comes first, so it scores the masks smaller m share in one batch."""
    labelers = {}
    if "ablation" in args.methods:
        for p in _keep_probs(args):
            for anti in (False, True) if getattr(args, "antithetic", False) else (False,):
                for m in sorted(args.masks, reverse=True):
                    name = (
                        f"ablation@{m}"
                        + ("" if p == args.keep_prob else f"p{p:g}")
                        + ("anti" if anti else "")
                    )
                    labelers[name] = AblationLabeler(
                        masks=m, keep_prob=p, antithetic=anti, batch_size=args.batch_size
                    )
    if "solo" in args.methods:
        labelers["solo"] = SoloLabeler(batch_size=args.batch_size)
    if "gradient" in args.methods:
        labelers["gradient"] = GradientLabeler(batch_size=args.batch_size)
    return labelers


def _keep_probs(args) -> list[float]:
    extra = getattr(args, "keep_probs", None) or []
    return [args.keep_prob] + [p for p in extra if p != args.keep_prob]


def _labeler_names(args) -> list[str]:
    return ["loo", *_variants(args)]


THROUGHPUT_STRATEGIES = (
    # name, masks per forward pass (None: --batch-size), reuse the prefix (and the masks' shared starts)
    ("one_at_a_time", 1, False),
    ("prefix_tree", 1, True),
    ("batched_prefix_tree", None, True),
)


def _loo_masks(n: int) -> list[list[bool]]:
    return [[True] * n, [False] * n] + [[j != i for j in range(n)] for i in range(n)]


def throughput(agent, record, args, out: Path) -> dict:
    """Prefix-shared scoring vs one mask at a time, on one trace, for two mask sets: the ablation
    labeler's random masks (word units) and the loo labeler's leave-one-out masks (sentence units)."""
    path = out / "throughput.json"
    if path.exists():
        done = json.loads(path.read_text())
        if "sets" in done:
            return done
    word = _item(record, "word", agent)
    sentence = _item(record, "sentence", agent)
    sets = {
        "ablation_word": (
            "word",
            word,
            draw_masks(len(word.units), args.throughput_masks, args.keep_prob, args.seed, word.id).tolist(),
        ),
        "loo_sentence": ("sentence", sentence, _loo_masks(len(sentence.units))),
    }
    result = {"id": word.id, "batch_size": args.batch_size, "sets": {}}
    for set_name, (units, item, masks) in sets.items():
        TransferScorer(agent, item)([masks[0]])  # warm-up
        row = {"units": units, "n_units": len(item.units), "masks": len(masks)}
        row["unique_masks"] = len({mask_key(m) for m in masks})  # duplicates are scored once either way
        prefix, rest = TransferScorer(agent, item).prompt([True] * len(item.units)).as_pair()
        row["prefix_tokens"], row["full_rest_tokens"] = (
            len(agent.encode_text(prefix)),
            len(agent.encode_text(rest)),
        )
        values = {}
        for name, bs, reuse in THROUGHPUT_STRATEGIES:
            scorer = TransferScorer(agent, item, batch_size=bs or args.batch_size, reuse_prefix=reuse)
            start = time.perf_counter()
            values[name] = scorer(masks)  # fresh cache: every mask is scored
            row[f"{name}_seconds"] = time.perf_counter() - start
            row[f"{name}_forward_passes"] = scorer.forward_passes
            print(f"throughput {set_name} {name}: {row[f'{name}_seconds']:.1f}s", flush=True)
        base = values["one_at_a_time"]
        for name, _, _ in THROUGHPUT_STRATEGIES[1:]:
            row[f"{name}_speedup"] = row["one_at_a_time_seconds"] / row[f"{name}_seconds"]
            row[f"{name}_max_abs_diff"] = max(abs(a - b) for a, b in zip(values[name], base))
        result["sets"][set_name] = row
    write_json_atomic(path, result, indent=1)
    return result


def print_throughput(t: dict) -> None:
    for set_name, row in t["sets"].items():
        parts = [f"one at a time {row['one_at_a_time_seconds']:.1f}s"]
        for name, _, _ in THROUGHPUT_STRATEGIES[1:]:
            parts.append(
                f"{name} {row[f'{name}_seconds']:.1f}s ({row[f'{name}_speedup']:.2f}x, "
                f"max |diff| {row[f'{name}_max_abs_diff']:.1e})"
            )
        print(f"throughput {set_name} ({row['masks']} masks): " + ", ".join(parts), flush=True)


def _mean(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.fmean(xs) if xs else None


def summarize(results: list[dict]) -> dict:
    table = {}
    for units in sorted({r["units"] for r in results}):
        rs = [r for r in results if r["units"] == units]
        names = [n for n in rs[0]["labelers"] if all(n in r["labelers"] for r in rs)]
        table[units] = {"traces": len(rs), "mean_units": _mean([r["n_units"] for r in rs])}
        for name in names:
            rows = [r["labelers"][name] for r in rs]
            table[units][name] = {
                "spearman_vs_loo": _mean([x.get("spearman_vs_loo") for x in rows]),
                "forward_passes": _mean([x.get("forward_passes") for x in rows]),
                "est_seconds": _mean([x.get("est_seconds") for x in rows]),
                "gain_recovered_at_budget": _mean([x.get("gain_recovered") for x in rows]),
                "median_gain_recovered": statistics.median(g)
                if (g := [x["gain_recovered"] for x in rows if x.get("gain_recovered") is not None])
                else None,
                "leak_rate": _mean([float(x["leak"]) for x in rows if x.get("leak") is not None]),
                "fit_r2": _mean([x.get("fit_r2") for x in rows]),
                "median_split_half": statistics.median(h)
                if (h := [x["reliability"] for x in rows if x.get("reliability_kind") == "split_half"
                          and x.get("reliability") is not None])
                else None,
                "median_split_half_top": statistics.median(h)
                if (h := [x["reliability_top"] for x in rows if x.get("reliability_kind") == "split_half"
                          and x.get("reliability_top") is not None])
                else None,
                "median_top_vs_loo": statistics.median(v)
                if (v := [x["top_vs_loo"] for x in rows if x.get("top_vs_loo") is not None])
                else None,
                "median_spearman_vs_loo": statistics.median(v)
                if (v := [x["spearman_vs_loo"] for x in rows if x.get("spearman_vs_loo") is not None])
                else None,
            }  # fmt: skip
        table[units]["full"] = {
            "leak_rate": _mean([float(r["full_leaks"]) for r in rs]),
            "gain_recovered_at_budget": 1.0,
        }
    return table


def _fmt(x, spec=".2f"):
    return "-" if x is None else format(x, spec)


def print_table(table: dict, budget: float) -> None:
    for units, t in table.items():
        print(f"\n{units} units: {t['traces']} traces, {_fmt(t['mean_units'], '.1f')} units/trace")
        print(
            f"{'labeler':<22}{'split-half':>11}{'top-1/4':>8}{'vs loo':>8}{'top-1/4':>8}{'passes':>8}{'wall s':>9}{'gain@' + str(budget):>10}"
            f"{'median':>8}{'leak':>7}{'R2':>7}"
        )
        for name, row in t.items():
            if not isinstance(row, dict):
                continue
            print(
                f"{name:<22}{_fmt(row.get('median_split_half')):>11}{_fmt(row.get('median_split_half_top')):>8}"
                f"{_fmt(row.get('median_spearman_vs_loo')):>8}{_fmt(row.get('median_top_vs_loo')):>8}"
                f"{_fmt(row.get('forward_passes'), '.1f'):>8}"
                f"{_fmt(row.get('est_seconds'), '.1f'):>9}{_fmt(row.get('gain_recovered_at_budget')):>10}"
                f"{_fmt(row.get('median_gain_recovered')):>8}{_fmt(row.get('leak_rate')):>7}{_fmt(row.get('fit_r2')):>7}"
            )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", required=True, help="traces folder (tokenrelay reason output)")
    parser.add_argument("--model", required=True, help="the large model (labeler)")
    parser.add_argument(
        "--out", required=True, help="folder for the cache, per-trace results and bench_labels.json"
    )
    parser.add_argument("--methods", default="ablation,loo,gradient", help="of ablation, loo, solo, gradient")
    parser.add_argument("--masks", default="8,16,32", help="ablation m values")
    parser.add_argument("--units", default="sentence,word")
    parser.add_argument("--keep-prob", type=float, default=0.5)
    parser.add_argument(
        "--keep-probs", default="", help="more ablation keep probabilities, e.g. 0.25,0.75 (each x every m)"
    )
    parser.add_argument("--antithetic", action="store_true", help="also antithetic ablation variants")
    parser.add_argument(
        "--min-gain", type=float, default=1.0, help="keep traces where f(all) - f(none) >= this"
    )
    parser.add_argument("--max-traces", type=int, default=10, help="stop screening after this many qualify")
    parser.add_argument("--limit", type=int, default=None, help="screen only the first N traces")
    parser.add_argument("--budget", type=float, default=0.25, help="ratio of reasoning tokens kept")
    parser.add_argument("--random-draws", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16, help="masks per forward pass")
    parser.add_argument("--throughput-masks", type=int, default=16, help="0 skips the throughput check")
    parser.add_argument(
        "--throughput-only", action="store_true", help="screen, measure the throughput, skip the labelers"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    args.masks = [int(m) for m in args.masks.split(",")]
    args.keep_probs = [float(p) for p in args.keep_probs.split(",") if p.strip()]
    args.units = [u.strip() for u in args.units.split(",") if u.strip()]
    report = run(args)
    if report is None:
        print("no trace qualifies: nothing to benchmark", file=sys.stderr)
        return 1
    if "table" in report:
        print_table(report["table"], args.budget)
    return 0


def run(args, agent=None, progress: bool = True) -> dict | None:
    """The benchmark as a function (``scripts.ablate_labelers`` drives it from a YAML config).

    ``args`` has the command-line options as attributes, with ``methods`` and ``units`` lists of
    names and ``masks`` a list of ints; ``agent`` reuses a loaded large model. Returns the report
    (also written to OUT/bench_labels.json), or None when no trace qualifies.
    """
    from selector.progress import progress_bar

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    records = load_traces(args.traces).to_list()
    records = [
        r for r in records if (r.get("reasoning") or "").strip() and str(r.get("answer") or "").strip()
    ]
    if args.limit:
        records = records[: args.limit]
    start = time.perf_counter()
    if agent is None:
        agent = Agent.from_pretrained(args.model, dtype=args.dtype, device=args.device)
        print(f"loaded {args.model} in {time.perf_counter() - start:.1f}s", flush=True)
    print(f"screening {len(records)} traces", flush=True)
    chosen = screen(agent, records, args, out)
    print(f"{len(chosen)} traces gain >= {args.min_gain} nats", flush=True)
    if not chosen:
        return None
    report = {"args": {k: v for k, v in vars(args).items()}, "qualifying": [r["id"] for r in chosen]}
    if args.throughput_masks:
        report["throughput"] = throughput(agent, chosen[0], args, out)
        print_throughput(report["throughput"])
    if getattr(args, "throughput_only", False):
        write_json_atomic(out / "throughput_report.json", report, indent=1)
        return report
    results = []
    with progress_bar(disable=not progress) as bar:
        task = bar.add_task("labelers per trace", total=len(args.units) * len(chosen))
        for units in args.units:
            for rec in chosen:
                results.append(bench_trace(agent, rec, units, args, out))
                bar.advance(task)
    report["screened"] = json.loads((out / "screen.json").read_text())
    report["table"] = summarize(results)
    report["results"] = results
    report["seconds"] = time.perf_counter() - start
    write_json_atomic(out / "bench_labels.json", report, indent=1)
    return report


if __name__ == "__main__":
    sys.exit(main())
