"""Labelers: how much each reasoning unit raises the large model's log-probability of the gold answer.

For a trace, f(S) = log p_large(gold | transfer prompt holding the units S, in order), with the
transfer prompt built by ``selector.prompts.transfer_prompt`` -- the same builder the relay uses,
so the labels measure exactly what the relay will send. Three estimators share one interface:

- ``ablation`` (default, ContextCite-style): m random keep-masks plus all and none, scored as one
  batch with the shared prefix encoded once; a linear surrogate f(S) ~ w0 + sum_i w_i [i in S] is
  fitted (ridge or L1) and its weights are the labels. m does not grow with the number of units.
- ``loo``: f(all) - f(all without unit i); n + 2 prompts.
- ``solo``: f({i}) - f(none), each unit's value on its own; n + 2 prompts, all but one short.
- ``gradient``: gradient x input embedding of log p(gold), summed per unit; one backward pass.

Every result carries reliability figures: for ``ablation`` the split-half agreement (Spearman
between the unit weights fitted on two disjoint halves of the random masks, and the share of the top
quarter of units both halves keep); deterministic labelers report none of their own, and
``reference_agreement`` compares them with a reference labeler the same two ways.
"""

from __future__ import annotations

import inspect
import math
import time
from abc import ABC, abstractmethod

import torch

from selector.prompts import PromptTemplate, transfer_prompt
from selector.units import assign_spans_to_units, join_units

from .label_math import draw_masks, fit_surrogate, r2_score, spearman, split_halves, top_agreement
from .transfer_scoring import LabelInput, LabelResult, TransferScorer, count_forwards, mask_key, score_passes

__all__ = [
    "METHODS",
    "AblationLabeler",
    "GradientLabeler",
    "LabelInput",
    "LabelResult",
    "Labeler",
    "LooLabeler",
    "SoloLabeler",
    "TransferScorer",
    "count_forwards",
    "draw_masks",
    "fit_surrogate",
    "get_labeler",
    "mask_key",
    "r2_score",
    "reference_agreement",
    "score_passes",
    "spearman",
    "top_agreement",
]

METHODS = ("ablation", "loo", "solo", "gradient")


# --------------------------------------------------------------------------- labelers


class Labeler(ABC):
    """Estimates each unit's contribution to f for one trace."""

    name: str = ""

    def __init__(self, *, batch_size: int = 16, template: PromptTemplate | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.template = template

    def scorer(self, agent, item: LabelInput, cache=None, reuse_prefix: bool = True) -> TransferScorer:
        return TransferScorer(
            agent,
            item,
            batch_size=self.batch_size,
            reuse_prefix=reuse_prefix,
            template=self.template,
            cache=cache,
        )

    def __call__(self, agent, item: LabelInput, *, cache=None) -> LabelResult:
        """Label one trace; ``cache`` (mask key -> (f, seconds)) lets callers share f values."""
        start = time.perf_counter()
        result = self._label(agent, item, cache)
        result.seconds = time.perf_counter() - start
        return result

    @abstractmethod
    def _label(self, agent, item: LabelInput, cache) -> LabelResult: ...

    def describe(self) -> dict:
        """The settings that shape the labels (recorded in the job summary)."""
        return {"method": self.name, "batch_size": self.batch_size}


class AblationLabeler(Labeler):
    """Random keep-masks + all + none, one batched call, linear surrogate weights as labels."""

    name = "ablation"

    def __init__(
        self,
        *,
        masks: int = 32,
        keep_prob: float = 0.5,
        fit: str = "ridge",
        alpha: float = 0.01,
        holdout: float = 0.2,
        seed: int = 0,
        antithetic: bool = False,
        batch_size: int = 16,
        template: PromptTemplate | None = None,
    ):
        super().__init__(batch_size=batch_size, template=template)
        if masks < 1:
            raise ValueError(f"masks must be >= 1, got {masks}")
        if not 0 < keep_prob < 1:
            raise ValueError(f"keep_prob must be in (0, 1), got {keep_prob}")
        if fit not in ("ridge", "lasso"):
            raise ValueError(f"fit must be 'ridge' or 'lasso', got {fit!r}")
        if not 0 <= holdout < 1:
            raise ValueError(f"holdout must be in [0, 1), got {holdout}")
        self.masks, self.keep_prob, self.fit, self.alpha = masks, keep_prob, fit, alpha
        self.holdout, self.seed, self.antithetic = holdout, seed, antithetic

    def describe(self) -> dict:
        return {
            **super().describe(),
            "masks": self.masks,
            "keep_prob": self.keep_prob,
            "fit": self.fit,
            "alpha": self.alpha,
            "holdout": self.holdout,
            "seed": self.seed,
            "antithetic": self.antithetic,
        }

    def _label(self, agent, item: LabelInput, cache) -> LabelResult:
        n = len(item.units)
        random_masks = draw_masks(n, self.masks, self.keep_prob, self.seed, item.id, self.antithetic)
        full, empty = torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)
        masks = torch.cat([full[None], empty[None], random_masks])
        names = ["all units", "no units"] + [f"random mask {k}" for k in range(self.masks)]
        scorer = self.scorer(agent, item, cache)
        y = torch.tensor(scorer(masks.tolist(), names), dtype=torch.float64)
        X = masks.to(torch.float64)
        r2 = self._cross_validated_r2(X, y)
        _, w = fit_surrogate(X, y, method=self.fit, alpha=self.alpha)
        halves = self.split_half_weights(X, y)
        return LabelResult(
            scores=[float(v) for v in w],
            f_all=float(y[0]),
            f_none=float(y[1]),
            method=self.name,
            fit_r2=r2,
            forward_passes=scorer.forward_passes,
            nominal_passes=scorer.nominal_passes,
            cost_s=scorer.cost_s,
            reliability=spearman(*halves) if halves else None,
            reliability_kind="split_half",
            reliability_top=top_agreement(*halves) if halves else None,
        )

    def split_half_weights(self, X: torch.Tensor, y: torch.Tensor) -> tuple[list[float], list[float]] | None:
        """The unit weights fitted on two disjoint halves of the random masks (each with all and
        none), compared for the split-half figures; None with fewer than 2 masks a half. The labels
        use every mask, so they are more reliable than these figures say (Spearman-Brown: about
        2r / (1 + r))."""
        halves = split_halves(self.masks, self.antithetic)
        if min(len(h) for h in halves) < 2:
            return None
        weights = []
        for half in halves:
            rows = torch.tensor([0, 1] + [k + 2 for k in half])  # rows 0, 1 are all and none
            weights.append(fit_surrogate(X[rows], y[rows], method=self.fit, alpha=self.alpha)[1].tolist())
        return weights[0], weights[1]

    def _cross_validated_r2(self, X: torch.Tensor, y: torch.Tensor) -> float | None:
        """R^2 of the surrogate on held-out random masks: k folds (k = 1/holdout) each hold out
        ~holdout of them (all and none always stay in training); pooled over every random mask,
        which is far steadier than one small held-out set."""
        m = self.masks
        folds = min(m, round(1 / self.holdout)) if self.holdout > 0 else 0
        if folds < 2:
            return None
        pred = torch.empty(m, dtype=torch.float64)
        fold_of = torch.arange(m) % folds
        for k in range(folds):
            test = torch.nonzero(fold_of == k).flatten() + 2  # rows 0, 1 are all and none
            train = torch.tensor([i for i in range(len(y)) if i not in set(test.tolist())])
            w0, w = fit_surrogate(X[train], y[train], method=self.fit, alpha=self.alpha)
            pred[test - 2] = w0 + X[test] @ w
        return r2_score(y[2:], pred)


class _SingleUnitLabeler(Labeler):
    """all, none and one prompt per unit (built by ``_mask``), batched; labels from ``_score``."""

    what = ""

    @staticmethod
    def _mask(n: int, i: int) -> list[bool]:
        raise NotImplementedError

    @staticmethod
    def _score(f_unit: float, f_all: float, f_none: float) -> float:
        raise NotImplementedError

    def _label(self, agent, item: LabelInput, cache) -> LabelResult:
        n = len(item.units)
        masks = [[True] * n, [False] * n] + [self._mask(n, i) for i in range(n)]
        names = ["all units", "no units"] + [f"{self.what} unit {i}" for i in range(n)]
        scorer = self.scorer(agent, item, cache)
        f = scorer(masks, names)
        return LabelResult(
            scores=[self._score(v, f[0], f[1]) for v in f[2:]],
            f_all=f[0],
            f_none=f[1],
            method=self.name,
            forward_passes=scorer.forward_passes,
            nominal_passes=scorer.nominal_passes,
            cost_s=scorer.cost_s,
        )


class LooLabeler(_SingleUnitLabeler):
    """Leave-one-out: f(all) - f(all without unit i); n + 2 prompts, batched."""

    name, what = "loo", "without"

    @staticmethod
    def _mask(n: int, i: int) -> list[bool]:
        return [j != i for j in range(n)]

    @staticmethod
    def _score(f_unit: float, f_all: float, f_none: float) -> float:
        return f_all - f_unit


class SoloLabeler(_SingleUnitLabeler):
    """Each unit on its own: f({i}) - f(none); n + 2 prompts, batched.

    Deterministic, and cheap where loo is dear: every prompt but the full one holds the question
    and a single unit, so after the shared prefix each costs only that unit's tokens. It measures
    what a unit carries by itself (a conclusion, a key number), not how units combine.
    """

    name, what = "solo", "only"

    @staticmethod
    def _mask(n: int, i: int) -> list[bool]:
        return [j == i for j in range(n)]

    @staticmethod
    def _score(f_unit: float, f_all: float, f_none: float) -> float:
        return f_unit - f_none


def reference_agreement(result: LabelResult, reference: LabelResult, name: str) -> LabelResult:
    """Record on ``result`` its Spearman and top-quarter agreement with ``reference``'s labels (a
    deterministic labeler's reliability figures); split-half figures already there are kept."""
    if result.reliability_kind == "split_half":
        return result
    result.reliability = spearman(result.scores, reference.scores)
    result.reliability_top = top_agreement(result.scores, reference.scores)
    result.reliability_kind = f"vs_{name}"
    return result


class GradientLabeler(Labeler):
    """Gradient x input embedding of log p(gold | full transfer), summed per unit.

    One forward + backward pass over the full transfer prompt and target, tokenized exactly as
    ``Agent.score`` does (prefix, rest and target separately). Plus f(all) and f(none) as the
    other labelers score them (a batched call). Image prompts work where the model accepts
    ``inputs_embeds`` together with ``pixel_values`` (LLaVA-style models do).
    """

    name = "gradient"

    def _label(self, agent, item: LabelInput, cache) -> LabelResult:
        n = len(item.units)
        start = time.perf_counter()
        scores, _ = gradient_attribution(agent, item, self.template)
        grad_s = time.perf_counter() - start
        scorer = self.scorer(agent, item, cache)
        f_all, f_none = scorer([[True] * n, [False] * n], ["all units", "no units"])
        return LabelResult(
            scores=scores,
            f_all=f_all,
            f_none=f_none,
            method=self.name,
            forward_passes=1 + scorer.forward_passes,
            nominal_passes=1 + scorer.nominal_passes,
            cost_s=grad_s + scorer.cost_s,
        )


def gradient_attribution(agent, item: LabelInput, template: PromptTemplate | None = None):
    """(per-unit gradient x input, log p(gold)) for the full transfer prompt."""
    n = len(item.units)
    kept = join_units(item.reasoning, item.units, [True] * n)
    parts = transfer_prompt(
        agent, item.question, kept, choices=item.choices, images=item.images, template=template
    )
    tail = transfer_prompt(
        agent, item.question, None, choices=item.choices, images=item.images, template=template
    )
    # The reasoning sits right before the part of `rest` that every transfer prompt ends with.
    r_end = len(parts.rest) - len(tail.rest)
    r_start = r_end - len(kept)
    if not parts.rest.endswith(tail.rest) or parts.rest[r_start:r_end] != kept:
        raise RuntimeError(f"trace {item.id!r}: cannot locate the reasoning inside the transfer prompt")
    # Tokenize exactly as Agent.score does: prefix (with images), rest, target, each on its own.
    prefix_enc = agent.encode_prompt(parts.prefix, parts.images)
    rest_enc = agent.tokenizer(parts.rest, add_special_tokens=False, return_offsets_mapping=True)
    rest_ids = torch.tensor(rest_enc["input_ids"], dtype=torch.long)
    if not torch.equal(rest_ids, agent.encode_text(parts.rest)):
        raise RuntimeError("offset tokenization differs from the scoring tokenization")
    target_ids = agent.encode_text(item.target)
    p, r = len(prefix_enc["input_ids"]), len(rest_ids)
    ids = torch.cat([prefix_enc["input_ids"], rest_ids, target_ids])[None].to(agent.device)
    extras = {k: v.to(agent.device) for k, v in prefix_enc.items() if k != "input_ids"}
    with torch.inference_mode(False), torch.enable_grad():
        embeds = agent.model.get_input_embeddings()(ids).detach().clone().requires_grad_(True)
        logits = agent.model(inputs_embeds=embeds, **extras).logits[0]
        ctx = p + r
        pred = logits[ctx - 1 : ctx - 1 + len(target_ids)].double().log_softmax(-1)
        logprob = pred.gather(-1, target_ids.to(pred.device)[:, None]).sum()
        (grad,) = torch.autograd.grad(logprob, embeds)
        per_token = (grad * embeds).sum(-1)[0, p : p + r].float().detach().cpu()
        logprob = float(logprob.detach())
    if not math.isfinite(logprob) or not torch.isfinite(per_token).all():
        raise ValueError(
            f"trace {item.id!r}: non-finite gradient attribution for the full transfer (all units)"
        )
    # Rest-token spans -> reasoning char offsets (clipped to the reasoning) -> units.
    base = item.units[0].start
    spans = []
    for s, e in rest_enc["offset_mapping"]:
        s, e = max(s, r_start), min(e, r_end)
        spans.append((s - r_start + base, e - r_start + base) if s < e else (0, 0))
    scores = [0.0] * n
    for value, unit in zip(per_token.tolist(), assign_spans_to_units(spans, item.units)):
        if unit >= 0:
            scores[unit] += value
    return scores, logprob


def get_labeler(name: str = "ablation", **kwargs) -> Labeler:
    """A labeler by name; keyword arguments that it does not take are ignored (one config for all)."""
    classes = {
        "ablation": AblationLabeler,
        "loo": LooLabeler,
        "solo": SoloLabeler,
        "gradient": GradientLabeler,
    }
    if name not in classes:
        raise ValueError(f"unknown labeler {name!r}; expected one of {METHODS}")
    cls = classes[name]
    accepted = set(inspect.signature(cls.__init__).parameters) | set(
        inspect.signature(Labeler.__init__).parameters
    )
    return cls(**{k: v for k, v in kwargs.items() if k in accepted})
