"""Cut reasoning text into units (token, word, sentence) that keep character offsets.

Everything downstream (labels, scores, selection, the transfer prompt) works per unit, and the
large and small models tokenize differently, so units are defined on characters of the reasoning
text, not on any one model's tokens. Token spans from any fast tokenizer can be mapped onto units
with :func:`assign_spans_to_units`.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

GRANULARITIES = ("token", "word", "sentence")

# The characters str.splitlines() breaks on: a line break anywhere ends a sentence/step unit.
LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
_TERMINALS = frozenset(".!?…")
_CLOSERS = frozenset("\"')]}”’»*")
_OPENERS = "\"'([{“‘«*"
# Words whose trailing period does not end a sentence (compared lower-case, without the last dot).
ABBREVIATIONS = frozenset(
    {
        "e.g",
        "i.e",
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "vs",
        "cf",
        "approx",
        "fig",
        "eq",
        "resp",
    }
)
_WORD_RE = re.compile(r"\S+")


@dataclass(frozen=True)
class Unit:
    """One unit of a text; ``text == source[start:end]`` always holds."""

    index: int
    start: int
    end: int
    text: str


def split_units(text: str, granularity: str = "sentence", tokenizer=None) -> list[Unit]:
    """Split ``text`` into ordered, non-overlapping units that never start or end with whitespace.

    ``token`` needs a fast tokenizer (its offsets give the spans); ``word`` and ``sentence`` ignore it.
    """
    if granularity == "token":
        if tokenizer is None:
            raise ValueError("granularity 'token' needs a fast tokenizer (tokenizer=None was given)")
        spans = _merge_overlapping(_trim(text, s, e) for s, e in token_spans(text, tokenizer))
    elif granularity == "word":
        spans = [m.span() for m in _WORD_RE.finditer(text)]
    elif granularity == "sentence":
        spans = [_trim(text, s, e) for s, e in _sentence_segments(text)]
    else:
        raise ValueError(f"unknown granularity {granularity!r}; expected one of {GRANULARITIES}")
    return [Unit(i, s, e, text[s:e]) for i, (s, e) in enumerate(sp for sp in spans if sp[0] < sp[1])]


def join_units(text: str, units: Sequence[Unit], keep) -> str:
    """Readable text of the kept units, in original order.

    ``keep`` is a bool mask (one per unit) or a collection of unit positions. Neighbours in the
    original keep the original text between them (so keeping all gives ``text.strip()``); across
    dropped units a single ``"\\n"`` (if the skipped stretch had a line break) or ``" "`` is used.
    """
    kept = _kept_positions(keep, len(units))
    parts: list[str] = []
    prev = -1
    for pos in kept:
        unit = units[pos]
        if parts:
            gap = text[units[prev].end : unit.start]
            if pos == prev + 1:
                parts.append(gap)
            else:
                parts.append("\n" if any(c in LINE_BREAKS for c in gap) else " ")
        parts.append(unit.text)
        prev = pos
    return "".join(parts)


def token_spans(text: str, tokenizer) -> list[tuple[int, int]]:
    """Character span of each token of ``tokenizer(text, add_special_tokens=False)``.

    Byte-level tokenizers may give several tokens the same span (pieces of one multi-byte char).
    """
    from tokenizers import Tokenizer  # installed with transformers

    if isinstance(tokenizer, Tokenizer):  # a raw `tokenizers` object works too
        return [tuple(o) for o in tokenizer.encode(text, add_special_tokens=False).offsets]
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"{type(tokenizer).__name__} is not a fast tokenizer: character offsets need "
            "return_offsets_mapping, which only fast (Rust `tokenizers`-backed) tokenizers provide"
        )
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False)
    return [(int(s), int(e)) for s, e in enc["offset_mapping"]]


def assign_spans_to_units(spans: Sequence[tuple[int, int]], units: Sequence[Unit]) -> list[int]:
    """For each span, the position of the unit it overlaps most (ties: first); -1 when none."""
    ends = [u.end for u in units]
    out: list[int] = []
    for s, e in spans:
        best, best_overlap = -1, 0
        i = bisect.bisect_right(ends, s)  # first unit ending after s
        while i < len(units) and units[i].start < e:
            overlap = min(e, units[i].end) - max(s, units[i].start)
            if overlap > best_overlap:
                best, best_overlap = i, overlap
            i += 1
        out.append(best)
    return out


def unit_token_counts(text: str, units: Sequence[Unit], tokenizer) -> list[int]:
    """Tokens per unit; at least 1 each, so a token budget never treats a unit as free."""
    counts = [0] * len(units)
    for idx in assign_spans_to_units(token_spans(text, tokenizer), units):
        if idx >= 0:
            counts[idx] += 1
    return [max(1, c) for c in counts]


# --------------------------------------------------------------------------- helpers


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _merge_overlapping(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort, drop empty spans and merge overlapping ones (touching spans stay apart)."""
    merged: list[list[int]] = []
    for s, e in sorted(sp for sp in spans if sp[0] < sp[1]):
        if merged and s < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def _sentence_segments(text: str) -> list[tuple[int, int]]:
    """Untrimmed segments that partition ``text`` (line breaks themselves are left out)."""
    segments: list[tuple[int, int]] = []
    start, i, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c in LINE_BREAKS:
            segments.append((start, i))
            start = i = i + 1
            continue
        if c in _TERMINALS:
            j = i
            while j < n and text[j] in _TERMINALS:
                j += 1
            k = j
            while k < n and text[k] in _CLOSERS:
                k += 1
            if (k == n or text[k].isspace()) and not (
                j == i + 1 and c == "." and _period_is_not_end(text, i)
            ):
                segments.append((start, k))
                start = i = k
                continue
            i = j
            continue
        i += 1
    segments.append((start, n))
    return segments


def _period_is_not_end(text: str, i: int) -> bool:
    """A lone period at ``i`` after an abbreviation (e.g., Mr.) or a list number ("2. ") ends nothing."""
    ws = i
    while ws > 0 and not text[ws - 1].isspace():
        ws -= 1
    word = text[ws:i].lstrip(_OPENERS).lower()
    if word in ABBREVIATIONS:
        return True
    if word.isascii() and word.isdigit():  # "1. First step" at the start of a line: a list marker
        ls = ws
        while ls > 0 and text[ls - 1].isspace() and text[ls - 1] not in LINE_BREAKS:
            ls -= 1
        return ls == 0 or text[ls - 1] in LINE_BREAKS
    return False


def _kept_positions(keep, n: int) -> list[int]:
    """Sorted unit positions from a bool mask or a collection of positions."""
    if hasattr(keep, "tolist"):  # numpy arrays, torch tensors
        keep = keep.tolist()
    if isinstance(keep, (set, frozenset)):
        items = list(keep)
        is_mask = False
    else:
        items = [x.item() if hasattr(x, "item") else x for x in keep]
        is_mask = bool(items) and all(isinstance(x, bool) for x in items)
    if is_mask:
        if len(items) != n:
            raise ValueError(f"keep mask has {len(items)} entries for {n} units")
        return [i for i, k in enumerate(items) if k]
    positions = set()
    for x in items:
        if isinstance(x, bool) or not isinstance(x, int):
            raise ValueError(f"keep must be a bool mask or unit indices, got element {x!r}")
        if not 0 <= x < n:
            raise ValueError(f"unit index {x} out of range for {n} units")
        positions.add(x)
    return sorted(positions)
