"""Give a trained selector another novelty fallback without retraining it.

    python -m scripts.set_fallback checkpoints/qwen2.5-coder-0.5b-to-1.5b-multitask-pointwise-fallback \\
        --mode disagreement --out checkpoints/qwen2.5-coder-0.5b-to-1.5b-multitask-pointwise-disagreement

The fallback's mode (``ScorerConfig.novelty_fallback``) decides only what happens to a trace the fitted
novelty model flags: the heads, the fitted distance and its threshold stay as trained, tensor for tensor.
So the modes that need nothing trained (``nothing``, ``selfinfo``, ``disagreement``) are a config change:
this loads the selector strictly, sets the mode, saves it to a new folder (never over an existing one)
and checks that the copy loads with every tensor equal. ``scalars`` needs its own head (train with
``--scorer.novelty_fallback scalars``); a selector without a fitted novelty model is refused.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

from selector.scorer import TokenSelector
from selector.scorer.config import NOVELTY_FALLBACKS

PROG = "python -m scripts.set_fallback"
MODES = tuple(m for m in NOVELTY_FALLBACKS if m not in (None, "scalars"))


def set_fallback(source: str, mode: str, out: str, note: str | None = None) -> Path:
    """Write ``source`` with novelty fallback ``mode`` to ``out``; returns the folder."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r} (scalars needs a trained head)")
    target = Path(out)
    if target.exists():
        raise FileExistsError(f"{target} exists: choose a new folder (a release is never overwritten)")
    selector = TokenSelector.from_pretrained(source)
    novelty = selector.net.novelty
    if novelty is None or not novelty.fitted:
        raise ValueError(f"{source}: no fitted novelty model (train with --scorer.novelty_fallback)")
    if selector.config.novelty_fallback == "scalars":
        raise ValueError(f"{source}: a scalars fallback's head would be dropped; keep that selector as it is")
    if mode == "nothing" and selector.config.min_score is None:
        raise ValueError("mode 'nothing' needs a score floor (min_score); this selector has none")
    before = {k: v.clone() for k, v in selector.net.state_dict().items()}
    old = selector.config.novelty_fallback
    selector.config = replace(selector.config, novelty_fallback=mode)
    selector.net.config = selector.config
    card = dict(selector.card)
    card["derived_from"] = f"{source}, novelty_fallback {old} -> {mode} (scripts.set_fallback; same tensors)"
    if note is not None:
        card["notes"] = note
    selector.save_pretrained(target, card=card)
    again = TokenSelector.from_pretrained(target).net.state_dict()
    if again.keys() != before.keys() or any(not torch.equal(again[k], before[k]) for k in before):
        raise RuntimeError(f"{target}: the saved tensors differ from {source}'s")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a selector folder (or hub id) with a fitted novelty fallback")
    parser.add_argument("--mode", required=True, choices=MODES, help="the new novelty_fallback")
    parser.add_argument("--out", required=True, help="a new folder for the copy")
    parser.add_argument("--note", default=None, help="replaces the model card's notes (markdown)")
    args = parser.parse_args(argv)
    try:
        folder = set_fallback(args.source, args.mode, args.out, args.note)
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    print(f"written {folder} (novelty fallback: {args.mode}; tensors identical to {args.source}'s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
