"""Per-unit features from a ReasoningView: what is cheap at inference time.

Two kinds, shared by both selector backbones so training and inference compute them alike:

- **scalars** (``SCALAR_FEATURES``): relative position, first/last unit, length, the small
  model's self-information over the unit's tokens, and lexical flags (digit, '=', operator,
  answer marker);
- **pooled hidden states**: the small model's hidden states of the unit's tokens (the layer the
  trace was reasoned with), mean- or max-pooled per unit. Those hidden states were computed with
  the question in context, so they are already question-aware.

Tokens are mapped to units by character spans (``selector.units.assign_spans_to_units``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

from .reasoning import ReasoningView
from .units import Unit, assign_spans_to_units

__all__ = [
    "SCALAR_FEATURES",
    "fast_assign_spans",
    "pool_per_unit",
    "token_units",
    "unit_hidden",
    "unit_scalars",
]

SCALAR_FEATURES = (
    "relative_position",  # unit index / (units - 1)
    "char_position",  # centre of the unit / length of the reasoning
    "is_first",
    "is_last",
    "log_chars",  # log1p(characters) / 5
    "log_tokens",  # log1p(small-model tokens in the unit) / 5 (0 without token spans)
    "mean_self_info",  # mean -logprob of the unit's tokens / 5
    "max_self_info",  # max -logprob / 10
    "has_digit",
    "has_equals",
    "has_operator",
    "has_answer_marker",  # answer / boxed / therefore / thus / so the
    "digit_fraction",
    "has_token_signals",  # 1 when self-information was available for this view
)
_OPERATORS = frozenset("+-*/×÷^<>%")
_ANSWER_MARKERS = ("answer", "boxed", "therefore", "thus", "so the", "final")


def token_units(view: ReasoningView, *, as_array: bool = False) -> list[int] | np.ndarray | None:
    """Unit position of each small-model reasoning token (-1: in no unit); None without token spans.

    Same answer as ``selector.units.assign_spans_to_units`` (most overlap, ties: first unit),
    vectorized for the common case where a token overlaps at most two units. ``as_array`` returns
    an int64 array (what the features use: no list round trip).
    """
    if view.token_spans is None:
        return None
    return fast_assign_spans(view.token_spans, view.units, as_array=as_array)


def fast_assign_spans(
    spans: Sequence[tuple[int, int]], units: Sequence[Unit], *, as_array: bool = False
) -> list[int] | np.ndarray:
    """``assign_spans_to_units`` with numpy; falls back to it when a token overlaps 3+ units."""
    if not spans or not units:
        out = [-1] * len(spans)
        return np.asarray(out, dtype=np.int64) if as_array else out
    sp = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    s, e = sp[:, 0], sp[:, 1]
    starts = np.fromiter((u.start for u in units), dtype=np.int64, count=len(units))
    ends = np.fromiter((u.end for u in units), dtype=np.int64, count=len(units))
    n = len(units)
    first = np.searchsorted(ends, s, side="right")  # first unit ending after the token starts
    second = first + 1
    third = first + 2
    if np.any((third < n) & (starts[np.minimum(third, n - 1)] < e)):
        slow = assign_spans_to_units(spans, units)
        return np.asarray(slow, dtype=np.int64) if as_array else slow

    def overlap(i):
        ok = i < n
        j = np.minimum(i, n - 1)
        ov = np.minimum(e, ends[j]) - np.maximum(s, starts[j])
        return np.where(ok, ov, 0)

    ov1, ov2 = overlap(first), overlap(second)
    best = np.where(ov2 > ov1, second, first)
    best_ov = np.maximum(ov1, ov2)
    out = np.where(best_ov > 0, best, -1)
    return out if as_array else out.tolist()


def pool_per_unit(
    values: torch.Tensor,
    unit_of_token: Sequence[int] | np.ndarray | torch.Tensor,
    n_units: int,
    pooling: str = "mean",
) -> torch.Tensor:
    """(n_units, dim) pooled rows of ``values`` (tokens, dim); rows with unit -1 are left out and
    units with no token get zeros."""
    if values.shape[0] != len(unit_of_token):
        raise ValueError(f"{values.shape[0]} token rows for {len(unit_of_token)} token spans")
    if isinstance(unit_of_token, torch.Tensor):
        index = unit_of_token.to(device=values.device, dtype=torch.long)
    elif isinstance(unit_of_token, np.ndarray):
        index = torch.from_numpy(unit_of_token.astype(np.int64, copy=False)).to(values.device)
    else:
        index = torch.as_tensor(list(unit_of_token), dtype=torch.long, device=values.device)
    # Tokens in no unit go to a spare last row that is dropped: cheaper than filtering them out
    # (a boolean-mask copy of all token rows costs more than the pooling itself on CPU).
    index = torch.where(index >= 0, index, n_units)
    out = values.new_zeros(n_units + 1, values.shape[1])
    if pooling == "mean":
        out.index_add_(0, index, values)
        counts = torch.bincount(index, minlength=n_units + 1)[:n_units].clamp(min=1).to(values.dtype)
        return out[:n_units].div_(counts[:, None])
    if pooling == "max":
        out.fill_(float("-inf"))
        out.index_reduce_(0, index, values, "amax", include_self=True)
        out = out[:n_units]
        return out.masked_fill_(torch.isinf(out), 0.0)
    raise ValueError(f"unknown pooling {pooling!r}; expected 'mean' or 'max'")


def unit_hidden(
    view: ReasoningView, pooling: str = "mean", unit_of_token: Sequence[int] | np.ndarray | None = None
) -> torch.Tensor:
    """(units, hidden) pooled small-model hidden states; a clear error when the view lacks them."""
    if view.hidden_states is None:
        raise ValueError(
            "this selector reads the small model's hidden states, but the reasoning view has none: "
            "reason with --hidden-layer (the layer in the selector's config) so traces store them"
        )
    if unit_of_token is None:
        unit_of_token = token_units(view)
    if unit_of_token is None:
        raise ValueError(
            "this selector needs token spans to pool hidden states per unit: build the view with the "
            "small model's tokenizer (view_from_trace(record, tokenizer=...))"
        )
    return pool_per_unit(view.hidden_states.float(), unit_of_token, len(view.units), pooling)


_MARKER_RE = re.compile("|".join(re.escape(m) for m in _ANSWER_MARKERS), re.IGNORECASE)
_OPERATOR_CODES = np.array([ord(c) for c in _OPERATORS], dtype=np.uint32)
# (256, 3) per-character classes: ASCII digit, '=', operator (all operators are below U+0100)
_CHAR_CLASSES = np.zeros((256, 3), dtype=bool)
_CHAR_CLASSES[48:58, 0] = True
_CHAR_CLASSES[61, 1] = True
_CHAR_CLASSES[_OPERATOR_CODES, 2] = True


def _lexical(text: str, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """(units, 5): has digit, has '=', has operator, has answer marker, share of digit characters."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    classes = _CHAR_CLASSES[np.minimum(codes, 255)] & (codes < 256)[:, None]  # one table lookup
    cum = np.concatenate([np.zeros((1, 3), dtype=np.int64), np.cumsum(classes, axis=0)])
    counts = cum[ends] - cum[starts]  # (units, 3)
    marker = np.zeros(len(starts), dtype=bool)
    spans = [m.span() for m in _MARKER_RE.finditer(text)]
    if spans:
        sp = np.asarray(spans, dtype=np.int64)
        i = np.searchsorted(starts, sp[:, 0], side="right") - 1
        inside = (i >= 0) & (sp[:, 1] <= ends[np.maximum(i, 0)])
        marker[i[inside]] = True
    lengths = np.maximum(1, ends - starts)
    return np.stack(
        [counts[:, 0] > 0, counts[:, 1] > 0, counts[:, 2] > 0, marker, counts[:, 0] / lengths], axis=1
    )


def unit_scalars(
    view: ReasoningView,
    unit_of_token: Sequence[int] | np.ndarray | None = None,
    *,
    require_token_signals: bool = False,
) -> torch.Tensor:
    """(units, len(SCALAR_FEATURES)) float features; see ``SCALAR_FEATURES`` for the columns.

    With ``require_token_signals`` a view without log-probs or token spans is an error (a selector
    trained with self-information must not silently score without it). Digits are ASCII 0-9.
    """
    n = len(view.units)
    if unit_of_token is None:
        unit_of_token = token_units(view)
    has_signals = unit_of_token is not None and view.token_logprobs is not None
    if require_token_signals and not has_signals:
        raise ValueError(
            "this selector uses the small model's self-information: the reasoning view needs "
            "token_logprobs and token_spans (view_from_trace(record, tokenizer=small tokenizer))"
        )
    out = np.zeros((n, len(SCALAR_FEATURES)), dtype=np.float64)
    if n == 0:
        return torch.zeros(0, len(SCALAR_FEATURES))
    starts = np.fromiter((u.start for u in view.units), dtype=np.int64, count=n)
    ends = np.fromiter((u.end for u in view.units), dtype=np.int64, count=n)
    n_tokens = np.zeros(n)
    info_sum = np.zeros(n)
    info_max = np.zeros(n)
    if unit_of_token is not None and len(unit_of_token):
        idx = np.asarray(unit_of_token, dtype=np.int64)
        keep = idx >= 0
        n_tokens = np.bincount(idx[keep], minlength=n).astype(np.float64)
        if has_signals:
            info = -np.asarray(view.token_logprobs, dtype=np.float64)[keep]
            info = np.where(np.isfinite(info), info, 30.0)
            info_sum = np.bincount(idx[keep], weights=info, minlength=n)
            np.maximum.at(info_max, idx[keep], info)
    length = max(1, len(view.reasoning))
    positions = np.arange(n)
    out[:, 0] = positions / (n - 1) if n > 1 else 0.0
    out[:, 1] = (starts + ends) / (2 * length)
    out[0, 2] = 1.0
    out[n - 1, 3] = 1.0
    out[:, 4] = np.log1p(ends - starts) / 5
    out[:, 5] = np.log1p(n_tokens) / 5
    out[:, 6] = info_sum / np.maximum(1, n_tokens) / 5
    out[:, 7] = info_max / 10
    out[:, 8:13] = _lexical(view.reasoning, starts, ends)
    out[:, 13] = float(has_signals)
    return torch.from_numpy(out.astype(np.float32))
