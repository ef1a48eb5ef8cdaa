"""Would a selector's novelty fallback notice a task it was not trained on? Leave one task out and see.

    python -m scripts.novelty_holdout --data runs/real/lab/labels_se3_train runs/real/lab/labels_se2_train \\
        runs/real/lab/labels_geo_train_a runs/real/lab/labels_geo_train_b \\
        --small-model models/qwen2.5-coder-0.5b-instruct --out docs/results/selector_fallback/holdout

For each task in the labelled traces (ids ``{task}-{seed}-{index}``), the novelty model
(``selector.scorer.novelty.TraceNovelty``, the one ``ScorerConfig.novelty_fallback`` fits) is fitted on
the other tasks' training split and thresholded on their validation split, exactly as training does;
the table gives the share of the left-out task's traces it flags (should be high for a new kind of
task) and of the fitted tasks' validation traces (about 1 - quantile by design). It reads the unit
vectors the ``hidden`` backbone reads (the traces' stored hidden states, pooled per unit), needs no
large model and no training, and uses training data only, so a fallback's settings can be chosen here
without touching evaluation sets. Writes holdout.md and holdout.json into ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from selector.io import write_json_atomic, write_text_atomic
from selector.scorer import ScorerConfig, TokenSelector
from selector.scorer.novelty import TraceNovelty
from training.datamodule import TraceDataModule, task_of


def trace_vectors(selector: TokenSelector, items) -> torch.Tensor:
    """(N, D) mean layer-normed unit vector of each trace, as ``UnitScorerNet.trace_vectors`` gives."""
    rows = []
    for it in items:
        hidden = selector.featurize(it.view)["unit_hidden"][None]
        rows.append(TraceNovelty.trace_vectors(hidden, torch.ones(hidden.shape[:2], dtype=torch.bool))[0])
    return torch.stack(rows)


def holdout_table(train, val, components: int, quantile: float) -> list[dict]:
    """One row per task: fit on the other tasks (train split), threshold on their val split."""
    tasks = sorted({t for t, _ in train} | {t for t, _ in val})
    if len(tasks) < 2:
        raise SystemExit(f"need traces of at least two tasks (ids {{task}}-{{seed}}-{{index}}), got {tasks}")
    rows = []
    for out in tasks:
        fit = torch.stack([v for t, v in train if t != out])
        calibration = torch.stack([v for t, v in val if t != out])
        held = torch.stack([v for t, v in train + val if t == out])
        novelty = TraceNovelty(fit.shape[1], components)
        info = novelty.fit(fit, calibration, quantile)
        rows.append(
            {
                "left_out": out,
                "left_out_traces": len(held),
                "left_out_flagged": float((novelty.score(held) > novelty.threshold).float().mean()),
                "fitted_traces": info["traces_fitted"],
                "validation_traces": info["traces_calibrated"],
                "validation_flagged": info["calibration_share_novel"],
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", nargs="+", required=True, help="labelled trace folders/files (several tasks)"
    )
    parser.add_argument(
        "--small-model", required=True, help="the small model whose tokenizer cuts token spans"
    )
    parser.add_argument(
        "--val-fraction", type=float, default=0.35, help="as the training config's data.val_fraction"
    )
    parser.add_argument("--components", type=int, default=16, help="ScorerConfig.novelty_components")
    parser.add_argument("--quantile", type=float, default=0.99, help="ScorerConfig.novelty_quantile")
    parser.add_argument("--out", required=True, help="output folder (holdout.md, holdout.json)")
    args = parser.parse_args(argv)
    if not 0 < args.quantile <= 1 or args.components < 1:
        parser.error("need 0 < --quantile <= 1 and --components >= 1")
    dm = TraceDataModule(args.data, small_model=args.small_model, val_fraction=args.val_fraction)
    dm.setup()
    width = dm.info.get("hidden_size")
    if width is None:
        raise SystemExit("the traces have no hidden states: reason with --hidden-layer")
    selector = TokenSelector(ScorerConfig(hidden_layer=-1, hidden_size=width, unit_vectors=True))
    split = {}
    for name, items in (("train", dm.train_items), ("val", dm.val_items)):
        split[name] = list(zip([task_of(it.id) for it in items], trace_vectors(selector, items)))
    rows = holdout_table(split["train"], split["val"], args.components, args.quantile)
    lines = [
        f"Novelty model fitted on every task but one ({args.components} components, threshold at the "
        f"{args.quantile:g} quantile of the fitted tasks' validation traces).",
        "",
        "| left-out task | its traces | flagged | fitted on | validation traces | validation flagged |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['left_out']} | {r['left_out_traces']} | {r['left_out_flagged']:.0%} | {r['fitted_traces']} | "
        f"{r['validation_traces']} | {r['validation_flagged']:.0%} |"
        for r in rows
    ]
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "holdout.md", text)
    write_json_atomic(out / "holdout.json", {"args": vars(args), "rows": rows})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
