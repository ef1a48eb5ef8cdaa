"""Scoring many continuations of one prompt on a shared KV cache, walked as a prefix tree.

Labeling scores one question under many reasoning variants: the prompt's prefix (system, image,
question) is encoded once, and the variants, visited in token order, share their longest common
start in a batch-1 "stem" cache that is cropped back and grown instead of recomputed. This is the
``Agent``'s ``score(reuse_prefix=True)`` path, kept apart from generation and plain scoring.

``PromptCache`` is the same idea for generation: the relay's answer from a transfer prompt starts
with the tokens of its direct-answer prompt (system and question), so it resumes from that prompt's
KV cache and prefills only the transfer and the instructions after it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["PrefixTreeScoring", "PromptCache"]


@dataclass
class PromptCache:
    """A batch-1 prompt and, once computed, its KV cache: a later prompt sharing its first tokens
    resumes from it (``Agent.generate(prefix=...)``). Without ``kv`` (a prompt whose generation came
    from an evaluation cache), the agent computes it on first use, outside the timed generation: the
    prompt's own generation already paid for that prefill."""

    text: str
    """The formatted prompt (tokenized on first use when ``ids`` is None)."""
    ids: torch.Tensor | None = None
    """Its token ids (1-D), when known."""
    kv: Any = None
    """The model's cache over exactly ``ids`` (never mutated: each use works on a copy)."""


class PrefixTreeScoring:
    """Mixin of ``Agent``: the cached-prefix scoring path (needs ``model``, ``device``,
    ``encode_text``, ``_gather`` and ``_right_padded`` from the agent)."""

    _takes_logits_to_keep: bool | None = None

    def _score_with_cache(self, prefix_enc, members, parts, targets, target_ids, batch_size, results) -> None:
        """Score every rest after one cached prefix, walking the rests as a prefix tree.

        Rests are visited in token order, so neighbours share their longest common start. A batch-1
        "stem" cache holds the prefix plus the tokens the current chunk of rests shares; moving on
        crops it back to what the next chunk shares too and encodes only the new tokens. Scoring a
        rest therefore costs the tokens it does not share with the previous one (leave-one-out
        masks share everything before the dropped unit: about half of the reasoning).
        """
        prefix_ids = prefix_enc["input_ids"].to(self.device)[None]
        extra = {k: v.to(self.device) for k, v in prefix_enc.items() if k != "input_ids"}
        out = self.model(input_ids=prefix_ids, use_cache=True, **extra, **self._last_logits_only(1))
        stem = _Stem(out.cache, prefix_ids.shape[1], out.logits[0, -1])
        # A cache that cannot be rolled back exactly (sliding-window layers) keeps the prefix only.
        tree = bool(getattr(out.cache, "is_croppable", False))
        rests = {i: self.encode_text(parts[i][1]).to(self.device) for i in members}
        order = sorted(members, key=lambda i: rests[i].tolist()) if tree else list(members)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            tgts = [target_ids[targets[i]].to(self.device) for i in chunk]
            if len(chunk) == 1 and tree:
                i, tgt = chunk[0], tgts[0]
                results[i] = self._gather(self._score_on_stem(stem, rests[i], tgt), 1, tgt)
                continue
            shared = _common_prefix_len([rests[i] for i in chunk]) if tree else 0
            self._grow_stem(stem, rests[chunk[0]][:shared])
            q = stem.length
            rems = [rests[i][shared:] for i in chunk]
            ids, mask = self._right_padded([torch.cat([r, t]) for r, t in zip(rems, tgts)])
            batch_cache = copy.deepcopy(stem.cache)
            batch_cache.batch_repeat_interleave(len(chunk))
            full_mask = torch.cat(
                [torch.ones((len(chunk), q), dtype=mask.dtype, device=self.device), mask], 1
            )
            positions = torch.arange(q, q + ids.shape[1], device=self.device)[None].expand(len(chunk), -1)
            logits = self.model(
                input_ids=ids,
                attention_mask=full_mask,
                position_ids=positions,
                cache=batch_cache,
                use_cache=True,
            ).logits
            for row, i in enumerate(chunk):
                # Position 0 of this chunk is predicted by the stem's last logits.
                row_logits = torch.cat([stem.last_logits[None], logits[row]], dim=0)
                results[i] = self._gather(row_logits, len(rems[row]) + 1, tgts[row])

    def _resume_from(self, prefix: PromptCache | None, encoded: list[dict]) -> tuple[Any, int]:
        """A copy of ``prefix``'s cache cut to the longest common start with the one text-only prompt
        in ``encoded`` (at least its last token left to run), and that length; (None, 0) otherwise."""
        if prefix is None or not one_text_prompt(encoded):
            return None, 0
        ids = encoded[0]["input_ids"]
        if prefix.ids is None:
            prefix.ids = self.encode_prompt(prefix.text, [])["input_ids"]
        n = min(_common_prefix_len([prefix.ids.to(ids.device), ids]), len(ids) - 1)
        if n < 1:
            return None, 0
        if prefix.kv is None:
            out = self.model(
                input_ids=prefix.ids[None].to(self.device), use_cache=True, **self._last_logits_only(1)
            )
            if not getattr(out.cache, "is_croppable", False):
                return None, 0
            prefix.kv = out.cache
        return cut_cache(copy.deepcopy(prefix.kv), n), n

    def _last_logits_only(self, n: int | torch.Tensor) -> dict:
        """``logits_to_keep=n`` (a count of last positions, or a 1-D tensor of positions) where the
        model takes it: the LM head over a 150k vocabulary is ~15% of a small LM's compute per
        position, wasted on positions nobody reads."""
        if self._takes_logits_to_keep is None:
            import inspect

            self._takes_logits_to_keep = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        return {"logits_to_keep": n} if self._takes_logits_to_keep else {}

    def _forward_on_stem(self, stem: _Stem, ids: torch.Tensor, keep_logits: int) -> torch.Tensor:
        """Run ``ids`` (1-D) after the stem's cached tokens; the last ``keep_logits`` rows of logits."""
        positions = torch.arange(stem.length, stem.length + len(ids), device=self.device)[None]
        out = self.model(
            input_ids=ids[None],
            position_ids=positions,
            cache=stem.cache,
            use_cache=True,
            **self._last_logits_only(keep_logits),
        )
        return out.logits[0, -keep_logits:]

    def _grow_stem(self, stem: _Stem, tokens: torch.Tensor) -> None:
        """Make the stem hold exactly prefix + ``tokens``, with the logits after its last token."""
        common = _common_prefix_len([stem.tokens, tokens])
        if common == len(tokens) == len(stem.tokens):
            return
        keep = 0 if len(tokens) == 0 else min(common, len(tokens) - 1)  # re-encode >= 1: its logits
        stem.crop(keep)
        if len(tokens) == 0:
            stem.last_logits = stem.prefix_logits
            return
        stem.last_logits = self._forward_on_stem(stem, tokens[keep:], 1)[-1]
        stem.tokens = tokens

    def _score_on_stem(self, stem: _Stem, rest: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Logits predicting each ``target`` token after ``rest`` (row 0 predicts the first), in one
        forward on the stem itself, which is left holding ``rest`` (the target is cropped off)."""
        common = _common_prefix_len([stem.tokens, rest])
        keep = common
        if common == len(rest) and len(stem.tokens) != len(rest):
            keep = max(0, len(rest) - 1)  # the logits after rest's last token are not at hand
        stem.crop(keep)
        if keep == len(rest):  # nothing of rest to encode: the target follows the stem's logits
            before = stem.prefix_logits if len(rest) == 0 else stem.last_logits
            row = torch.cat([before[None], self._forward_on_stem(stem, target, len(target))], dim=0)
        else:
            fed = torch.cat([rest[keep:], target])
            row = self._forward_on_stem(stem, fed, len(target) + 1)  # from rest's last token on
            stem.last_logits = row[0]
        stem.cache.crop(-len(target))
        stem.tokens = rest
        return row


class _Stem:
    """A batch-1 KV cache of the shared prefix plus ``tokens``, and the logits after its last token."""

    def __init__(self, cache, prefix_len: int, prefix_logits: torch.Tensor):
        self.cache = cache
        self.prefix_len = prefix_len
        self.prefix_logits = prefix_logits
        self.last_logits = prefix_logits
        self.tokens = torch.zeros(0, dtype=torch.long, device=prefix_logits.device)

    @property
    def length(self) -> int:
        return self.prefix_len + len(self.tokens)

    def crop(self, keep: int) -> None:
        """Keep only the first ``keep`` of the stem's own tokens (the prefix always stays)."""
        drop = len(self.tokens) - keep
        if drop > 0:
            self.cache.crop(-drop)
            self.tokens = self.tokens[:keep]


def one_text_prompt(encoded: Sequence[dict]) -> bool:
    """Whether ``encoded`` is a single prompt of token ids only (no image features): what a
    ``PromptCache`` can be kept for or resumed into."""
    return len(encoded) == 1 and not set(encoded[0]) - {"input_ids", "attention_mask"}


def cut_cache(kv, keep: int):
    """``kv`` cut (in place) to its first ``keep`` positions; returned for chaining."""
    extra = kv.get_seq_length() - keep
    if extra > 0:
        kv.crop(-extra)  # this transformers' caches crop by a negative count only
    return kv


def _common_prefix_len(seqs: Sequence[torch.Tensor]) -> int:
    """Length of the longest common start of 1-D token tensors."""
    n = min(len(s) for s in seqs)
    if n == 0:
        return 0
    first = seqs[0][:n]
    same = torch.ones(n, dtype=torch.bool, device=first.device)
    for s in seqs[1:]:
        same &= s[:n] == first
    diff = (~same).nonzero()
    return n if len(diff) == 0 else int(diff[0, 0])
