"""What `tokenrelay eval` reports: per-condition metrics, the results table (Markdown, CSV, JSON)
and the plots (accuracy vs transferred tokens; accuracy vs latency with the Pareto front)."""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Sequence
from pathlib import Path

from ..io import write_json_atomic, write_text_atomic
from ..relay import STAGES, RelayResult, StageStats
from .paired import paired_markdown
from .plots import save_figure, subplots

__all__ = ["condition_metrics", "markdown_table", "output_tokens", "pareto_front", "write_outputs"]


# --------------------------------------------------------------------------- metrics


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def output_tokens(r: RelayResult) -> int:
    """Tokens of the generation that gave the final answer (what the user waits to be written)."""
    if "large_prefill" in r.stages:
        return r.stages["large_prefill"].new_tokens + r.stages.get("large_decode", StageStats()).new_tokens
    if r.path == "direct" and "large_direct" in r.stages:
        return r.stages["large_direct"].new_tokens
    return r.stages["small_reasoning"].new_tokens if "small_reasoning" in r.stages else 0


def condition_metrics(
    results: Sequence[RelayResult],
    f_none: Sequence[float],
    f_all: Sequence[float | None],
    gain_min_nats: float = 1.0,
    relay: bool = True,
) -> dict:
    """Accuracy, leakage, gold log-prob, gain recovered, latency per stage, transfer size and rate."""
    n = len(results)
    leaked = [r.leaked for r in results]
    clean = [r.correct for r in results if r.leaked is False]
    gains = []
    for r, none, full in zip(results, f_none, f_all):
        if r.gold_logprob is None or full is None or full - none < gain_min_nats:
            continue
        gains.append((r.gold_logprob - none) / (full - none))
    transferred = [r for r in results if r.path == "transfer"]
    row = {
        "n": n,
        "accuracy": _mean([float(r.correct) if r.correct is not None else None for r in results]),
        "leakage": _mean([float(x) if x is not None else None for x in leaked]) if any(x is not None for x in leaked) else None,
        "accuracy_no_leak": _mean([float(c) for c in clean if c is not None]) if clean else None,
        "no_leak_n": len(clean),
        "gold_logprob": _mean([r.gold_logprob for r in results]),
        "gain_recovered": _mean(gains) if gains else None,
        "gain_n": len(gains) if any(r.gold_logprob is not None for r in results) else None,
        "transfer_rate": len(transferred) / n if relay else None,
        "transferred_tokens": statistics.fmean(r.transfer_tokens for r in results),
        "transfer_ratio": _mean([r.transfer_tokens / r.reasoning_tokens for r in transferred if r.reasoning_tokens]),
        "output_tokens": statistics.fmean(output_tokens(r) for r in results),
        "latency": {s: statistics.fmean(r.stages[s].seconds if s in r.stages else 0.0 for r in results) for s in STAGES},
        "end_to_end": statistics.fmean(r.latency_s for r in results),
        "fallback_rate": sum(r.selector_fallback for r in results) / n if relay else None,
    }  # fmt: skip
    return row


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower-or-equal x and higher-or-equal y, one strictly."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


# --------------------------------------------------------------------------- outputs

COLUMNS = (
    ("title", "condition", None),
    ("accuracy", "accuracy", "pct"),
    ("leakage", "leakage", "pct"),
    ("accuracy_no_leak", "acc. (no leak)", "pct"),
    ("gold_logprob", "gold log-prob", "f2"),
    ("gain_recovered", "gain recovered", "f2"),
    ("gain_n", "gain n", "int"),
    ("transfer_rate", "transfer rate", "pct"),
    ("transferred_tokens", "transferred tokens", "f1"),
    ("transfer_ratio", "share of reasoning", "pct"),
    ("output_tokens", "output tokens", "f1"),
)


def _fmt(value, how) -> str:
    if value is None:
        return ""
    if how == "pct":
        return f"{value:.1%}"
    if how == "f2":
        return f"{value:.2f}"
    if how == "f1":
        return f"{value:.1f}"
    if how == "s":
        return f"{value:.3f}"
    return str(value)


def markdown_table(result: dict) -> str:
    """The results as one Markdown table (seconds per question for the stages and end to end)."""
    heads = [h for _, h, _ in COLUMNS] + [f"{s} s" for s in STAGES] + ["end-to-end s"]
    lines = ["| " + " | ".join(heads) + " |", "|" + " --- |" * len(heads)]
    for row in result["rows"]:
        cells = [_fmt(row[k], how) for k, _, how in COLUMNS]
        cells += [_fmt(row["latency"][s], "s") for s in STAGES] + [_fmt(row["end_to_end"], "s")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _csv_text(rows: Sequence[dict]) -> str:
    keys = ["condition", "title", "kind", "selector", "budget", "gate", "n", "accuracy", "leakage",
            "accuracy_no_leak", "no_leak_n", "gold_logprob", "gain_recovered", "gain_n", "transfer_rate",
            "transferred_tokens", "transfer_ratio", "output_tokens"]  # fmt: skip
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(keys + [f"latency_{s}" for s in STAGES] + ["end_to_end"])
    for row in rows:
        writer.writerow(
            ["" if row[k] is None else row[k] for k in keys]
            + [row["latency"][s] for s in STAGES]
            + [row["end_to_end"]]
        )
    return buf.getvalue()


def write_outputs(result: dict, records: Sequence[dict], out: Path, plot: bool = True) -> dict[str, Path]:
    """results.md/.csv/.json, records.jsonl and the plots, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": out / "results.md",
        "csv": out / "results.csv",
        "json": out / "results.json",
        "records": out / "records.jsonl",
    }
    helps = result["full_helps"]
    intro = (
        f"# TokenRelay evaluation\n\n{result['questions']} questions from `{result['data']}`; "
        f"small `{result['small']}`, large `{result['large']}`. Stage latencies are mean seconds per "
        "question (a batched stage counts its batch's wall time), measured when each output was first "
        "computed. Gain recovered = mean (f(kept) - f(none)) / (f(all) - f(none)) over the "
        f"{helps} problems where the full reasoning raises the large model's gold log-prob by at least "
        f"{result['gain_min_nats']:g} nat(s).\n\n"
    )
    paired = ""
    if result.get("paired"):
        paired = (
            "\n## Paired comparisons\n\nPer problem, each trained selector against the best heuristic "
            "(of first / last / random / selfinfo, at its budget and gate, chosen on these problems) and "
            "against the full transfer and no transfer (none): mean difference, bootstrap 95% interval, wins / losses / ties.\n\n"
            + paired_markdown(result["paired"])
            + "\n"
        )
    fallbacks = [r for r in result["rows"] if r.get("fallback_rate")]
    if fallbacks:
        paired = (
            "\nHandled by the selector's novelty fallback (traces unlike its training data; what it does "
            "is ScorerConfig.novelty_fallback): "
            + "; ".join(f"{r['title']} {r['fallback_rate']:.1%} of problems" for r in fallbacks)
            + ".\n"
        ) + paired
    write_text_atomic(paths["markdown"], intro + markdown_table(result) + "\n" + paired)
    write_text_atomic(paths["csv"], _csv_text(result["rows"]))
    write_text_atomic(paths["records"], "".join(json.dumps(r, default=str) + "\n" for r in records))
    if plot:
        paths["plot_tokens"] = out / "accuracy_vs_tokens.png"
        paths["plot_latency"] = out / "accuracy_vs_latency.png"
        plot_tokens(result, paths["plot_tokens"])
        plot_latency(result, paths["plot_latency"])
    result_json = {**result, "outputs": {k: str(v) for k, v in paths.items()}}
    write_json_atomic(paths["json"], result_json)
    return paths


def plot_tokens(result: dict, path: Path) -> None:
    """Accuracy vs mean transferred tokens: one line per selector and gate over the budgets."""
    fig, ax = subplots(figsize=(7.5, 4.8))
    series: dict[tuple, list[dict]] = {}
    for r in result["rows"]:
        if r["kind"] == "relay" and r["budget"] is not None:
            series.setdefault((r["selector"], r["gate"]), []).append(r)
    for (name, gate), rs in series.items():
        rs = sorted(rs, key=lambda r: r["transferred_tokens"])
        ax.plot([r["transferred_tokens"] for r in rs], [r["accuracy"] for r in rs], marker="o",
                label=f"{name} ({gate})")  # fmt: skip
    for r in result["rows"]:
        if r["kind"] != "relay" or r["budget"] is None:
            ax.scatter([r["transferred_tokens"]], [r["accuracy"]], marker="*", s=110, zorder=3)
            ax.annotate(r["title"], (r["transferred_tokens"], r["accuracy"]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")  # fmt: skip
    ax.set_xlabel("tokens transferred to the large model (mean per question, large tokenizer)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"accuracy vs transferred tokens ({result['questions']} questions)")
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=7, loc="best")
    save_figure(fig, path)


def plot_latency(result: dict, path: Path) -> None:
    """Accuracy vs mean end-to-end latency for every condition, the Pareto front marked."""
    fig, ax = subplots(figsize=(7.5, 4.8))
    rows = [r for r in result["rows"] if r["accuracy"] is not None]
    points = [(r["end_to_end"], r["accuracy"]) for r in rows]
    front = pareto_front(points)
    ax.scatter([p[0] for p in points], [p[1] for p in points], s=25, color="tab:blue", zorder=2)
    if front:
        xs, ys = [points[i][0] for i in front], [points[i][1] for i in front]
        ax.step(xs, ys, where="post", color="tab:red", linewidth=1.5, label="Pareto front", zorder=3)
        ax.scatter(xs, ys, s=80, facecolors="none", edgecolors="tab:red", zorder=4)
    for i, r in enumerate(rows):
        if i in front or r["kind"] != "relay":
            ax.annotate(r["title"], points[i], fontsize=7, xytext=(4, 4), textcoords="offset points")
    batch = (result.get("config") or {}).get("batch_size", 1)
    per = "per question" if batch == 1 else f"per question; batches of {batch} count their wall time"
    ax.set_xlabel(f"end-to-end latency (mean seconds {per})")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"accuracy vs latency ({result['questions']} questions)")
    ax.grid(alpha=0.3)
    if front:
        ax.legend(fontsize=8, loc="best")
    save_figure(fig, path)
