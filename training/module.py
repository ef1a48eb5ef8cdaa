"""The LightningModule that trains a selector: ranking losses over a trace's units, ranking metrics.

Losses (``loss``): ``listwise`` (default; ListNet cross-entropy between the softmax of the scores and
the softmax of the per-trace standardized labels), ``pairwise`` (RankNet logistic loss on every pair
of units with different labels), ``bce_top_q`` (BCE on membership in the top-q units by label) and
``pointwise`` (Huber regression on the labels themselves, in nats). The ranking losses see each trace
on its own, so their scores say which unit of a trace is best, never whether any unit is worth
sending; the pointwise loss keeps the labels' sign and scale across traces (a wrong conclusion's unit
is labelled several nats below zero), so with a score floor (``ScorerConfig.min_score = 0``) the
selector can transfer nothing from a trace it predicts will hurt.

Validation metrics (torchmetrics): Spearman with the labels, NDCG@k, AUROC of top-q membership,
each per trace and averaged; and the one that matters, gain at budget b. With the labels as a
linear surrogate, f(S) ≈ f(∅) + Σ_{i∈S} label_i, so for the selection S_b a budget of b of the
reasoning tokens allows (``selector.selection.select_units``):

- ``gain@b``: mean f(S_b) − f(∅) in nats;
- ``gain_recovered@b``: Σ (f(S_b) − f(∅)) / Σ (f(all) − f(∅)) over traces where the full transfer
  helps by more than ``min_gain`` (DESIGN.md's definition; traces where transfer hurts would flip
  the sign of the ratio);
- ``oracle_frac@b``: Σ gain of S_b / Σ gain of the oracle's selection at the same budget.
"""

from __future__ import annotations

from dataclasses import asdict, replace

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, SumMetric
from torchmetrics.functional import spearman_corrcoef
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.functional.retrieval import retrieval_normalized_dcg

from selector.scorer import IncompatibleSelectorError, ScorerConfig, TokenSelector
from selector.selection import Budget, select_units

from .datamodule import LabelledTrace, TraceBatch, task_of
from .rng import rng_states, set_rng_states

__all__ = [
    "LOSSES",
    "SelectorModule",
    "bce_top_q_loss",
    "listwise_loss",
    "pairwise_loss",
    "pointwise_loss",
    "top_q_targets",
]

LOSSES = ("listwise", "pairwise", "bce_top_q", "pointwise")
_NEG = -1e9


def _standardize(labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    n = mask.sum(1, keepdim=True).clamp(min=1)
    mean = (labels * mask).sum(1, keepdim=True) / n
    var = (((labels - mean) * mask) ** 2).sum(1, keepdim=True) / n
    return (labels - mean) / var.sqrt().clamp(min=1e-6)


def listwise_loss(scores, labels, mask, temperature: float = 1.0) -> torch.Tensor:
    """ListNet: cross-entropy from softmax(standardized labels / T) to softmax(scores), per trace."""
    target = torch.softmax((_standardize(labels, mask) / temperature).masked_fill(~mask, _NEG), dim=1)
    logp = torch.log_softmax(scores.masked_fill(~mask, _NEG), dim=1)
    return -(target * logp * mask).sum(1).mean()


def pairwise_loss(scores, labels, mask, margin: float = 1e-6) -> torch.Tensor:
    """RankNet: softplus(-(s_i - s_j)) for every pair with label_i > label_j, averaged per trace."""
    better = (labels[:, :, None] - labels[:, None, :] > margin) & mask[:, :, None] & mask[:, None, :]
    diff = scores[:, :, None] - scores[:, None, :]
    per_pair = F.softplus(-diff) * better
    return (per_pair.sum((1, 2)) / better.sum((1, 2)).clamp(min=1)).mean()


def top_q_targets(labels: torch.Tensor, mask: torch.Tensor, q: float) -> torch.Tensor:
    """1.0 for the ceil(q·n) highest-labelled units of each trace (at least 1, at most n − 1)."""
    out = torch.zeros_like(labels)
    for row in range(labels.shape[0]):
        n = int(mask[row].sum())
        k = min(max(1, int(torch.tensor(q * n).ceil())), max(1, n - 1))
        top = torch.topk(labels[row, :n], k).indices
        out[row, top] = 1.0
    return out


def bce_top_q_loss(scores, labels, mask, q: float = 0.25) -> torch.Tensor:
    """Binary cross-entropy on membership in the top-q units by label."""
    target = top_q_targets(labels, mask, q)
    loss = F.binary_cross_entropy_with_logits(scores, target, reduction="none")
    return ((loss * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()


def pointwise_loss(scores, labels, mask, delta: float = 1.0) -> torch.Tensor:
    """Huber loss between each unit's score and its label (nats), averaged per trace: scores become
    predicted gains, comparable across traces; ``delta`` bounds the pull of the largest labels."""
    loss = F.huber_loss(scores, labels, reduction="none", delta=delta)
    return ((loss * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()


class SelectorModule(L.LightningModule):
    """Trains a ``TokenSelector``; the net is built in ``setup`` once the data tells hidden sizes."""

    def __init__(
        self,
        scorer: ScorerConfig,
        loss: str = "listwise",
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        label_temperature: float = 1.0,
        top_q: float = 0.25,
        ndcg_k: int = 10,
        budgets: list[float] | None = None,
        min_gain: float = 0.1,
    ):
        """
        Args:
            scorer: The selector network (backbone, head, sizes).
            loss: listwise (default), pairwise, bce_top_q or pointwise (scores predict each unit's gain
                in nats; pair it with ``scorer.min_score: 0.0``).
            lr: AdamW learning rate.
            weight_decay: AdamW weight decay.
            label_temperature: Temperature of the listwise target softmax over standardized labels.
            top_q: Share of units that count as "top" for bce_top_q and the AUROC metric.
            ndcg_k: Cut-off of the NDCG metric.
            budgets: Ratios of reasoning tokens at which gain is measured (default 0.1, 0.25, 0.5).
            min_gain: gain_recovered counts traces whose full transfer gains more than this (nats).
        """
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}")
        if not 0 < top_q < 1 or label_temperature <= 0 or lr <= 0 or ndcg_k < 1:
            raise ValueError("need 0 < top_q < 1, label_temperature > 0, lr > 0 and ndcg_k >= 1")
        budgets = [0.1, 0.25, 0.5] if budgets is None else [float(b) for b in budgets]
        for b in budgets:
            Budget.ratio(b)  # validates
        self.scorer_config = scorer
        self.loss_name = loss
        self.lr = lr
        self.weight_decay = weight_decay
        self.label_temperature = label_temperature
        self.top_q = top_q
        self.ndcg_k = ndcg_k
        self.budgets = budgets
        self.min_gain = min_gain
        self.save_hyperparameters(
            {
                "scorer": asdict(scorer),
                "loss": loss,
                "lr": lr,
                "weight_decay": weight_decay,
                "label_temperature": label_temperature,
                "top_q": top_q,
                "ndcg_k": ndcg_k,
                "budgets": budgets,
                "min_gain": min_gain,
            }
        )
        self.selector: TokenSelector | None = None
        self.net: nn.Module | None = None
        self.data_info: dict = {}
        self._features: dict[str, dict] = {}
        # resume checkpoints of the encoder backbone leave out the frozen pretrained encoder
        self.strict_loading = scorer.backbone != "encoder"
        q = round(100 * top_q)
        self.metric_names = {
            "spearman": "val/spearman",
            "ndcg": f"val/ndcg@{ndcg_k}",
            "auroc": f"val/auroc_top{q}",
        }
        self._task_sums: dict[str, dict[str, list[float]]] = {}
        self.val_means = nn.ModuleDict({k: MeanMetric() for k in ("loss", "spearman", "ndcg", "auroc")})
        self.gain_sums = nn.ModuleDict()
        for b in budgets:
            key = _budget_key(b)
            self.val_means[f"gain_{key}"] = MeanMetric()
            for part in ("sel", "oracle", "sel_helped", "full_helped"):
                self.gain_sums[f"{part}_{key}"] = SumMetric()
            if scorer.novelty_fallback == "scalars":  # the fallback head is released at its own best epoch
                self.val_means[f"fallback_gain_{key}"] = MeanMetric()
        if scorer.novelty_fallback == "scalars":
            self.val_means["fallback_loss"] = MeanMetric()

    # ------------------------------------------------------------------ building
    def build_selector(self, info: dict | None = None) -> TokenSelector:
        """Complete the scorer config from the data (hidden size, small model) and build the net."""
        info = dict(info or {})
        cfg = replace(self.scorer_config, lora_targets=list(self.scorer_config.lora_targets))
        data_gran = info.get("granularity")
        if data_gran is not None and data_gran != cfg.granularity:
            raise ValueError(
                f"the labelled traces use {data_gran!r} units but model.scorer.granularity is {cfg.granularity!r}"
            )
        if cfg.backbone == "hidden":
            width = info.get("hidden_size")
            if width is None and cfg.hidden_size is None:
                raise ValueError(
                    "the hidden backbone needs hidden states, but the traces have none: reason with "
                    f"--hidden-layer {cfg.hidden_layer} (or train the encoder backbone)"
                )
            if width is not None and cfg.hidden_size is not None and width != cfg.hidden_size:
                raise IncompatibleSelectorError(
                    f"model.scorer.hidden_size is {cfg.hidden_size} but the traces' hidden states are {width} wide"
                )
            cfg.hidden_size = cfg.hidden_size or width
        if cfg.small_model is None:
            cfg.small_model = info.get("small_model")
        if cfg.small_vocab_size is None:
            cfg.small_vocab_size = info.get("small_vocab_size")
        self.selector = TokenSelector(cfg)
        self.net = self.selector.net
        self.data_info = info
        return self.selector

    def setup(self, stage: str) -> None:
        if self.selector is not None:
            return
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None:
            datamodule.setup(stage)
        self.build_selector(getattr(datamodule, "info", None))

    # ------------------------------------------------------------------ batches
    def on_before_batch_transfer(self, batch, dataloader_idx: int = 0):
        if not isinstance(batch, (TraceBatch, list)):
            return batch
        items: list[LabelledTrace] = list(batch)
        feats = []
        for it in items:
            if it.id not in self._features:  # features are deterministic: compute once per trace
                self._features[it.id] = self.selector.featurize(it.view)
            feats.append(self._features[it.id])
        tensors = self.selector.collate(feats)
        b, u = tensors["unit_mask"].shape
        labels = torch.zeros(b, u)
        for i, it in enumerate(items):
            labels[i, : len(it.labels)] = torch.tensor(it.labels)
        tensors["labels"] = labels
        meta = [
            {
                "labels": it.labels,
                "token_counts": it.token_counts,
                "f_all": it.f_all,
                "f_none": it.f_none,
                "task": task_of(it.id),
            }
            for it in items
        ]
        return {"inputs": tensors, "meta": meta}

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(inputs)

    def compute_loss(self, scores, labels, mask) -> torch.Tensor:
        if self.loss_name == "listwise":
            return listwise_loss(scores, labels, mask, self.label_temperature)
        if self.loss_name == "pairwise":
            return pairwise_loss(scores, labels, mask)
        if self.loss_name == "pointwise":
            return pointwise_loss(scores, labels, mask)
        return bce_top_q_loss(scores, labels, mask, self.top_q)

    def training_step(self, batch, batch_idx: int):
        inputs = batch["inputs"]
        scores = self(inputs)
        loss = self.compute_loss(scores, inputs["labels"], inputs["unit_mask"])
        self.log("train/loss", loss, batch_size=len(batch["meta"]), prog_bar=True)
        if self.net.fallback is not None:  # the scalar-only head learns from every trace too
            with torch.random.fork_rng(devices=[]):  # its dropout leaves the main head's draws as they were
                fallback_scores = self.net.fallback(inputs)
            fallback = self.compute_loss(fallback_scores, inputs["labels"], inputs["unit_mask"])
            self.log("train/fallback_loss", fallback, batch_size=len(batch["meta"]))
            loss = loss + fallback
        return loss

    def validation_step(self, batch, batch_idx: int):
        inputs = batch["inputs"]
        scores = self(inputs)
        mask = inputs["unit_mask"]
        loss = self.compute_loss(scores, inputs["labels"], mask)
        self.val_means["loss"].update(loss, weight=len(batch["meta"]))
        top = top_q_targets(inputs["labels"], mask, self.top_q)
        for row, meta in enumerate(batch["meta"]):
            n = len(meta["labels"])
            s = scores[row, :n].float()
            y = inputs["labels"][row, :n].float()
            rho = spearman_corrcoef(s, y)
            self.val_means["spearman"].update(rho)
            if meta["task"] is not None:
                self._task_sums.setdefault(meta["task"], {}).setdefault("spearman", []).append(float(rho))
            self.val_means["ndcg"].update(retrieval_normalized_dcg(s, y - y.min(), top_k=self.ndcg_k))
            self.val_means["auroc"].update(binary_auroc(s, top[row, :n].long()))
            self._update_gain(s.tolist(), meta)
        if self.net.fallback is not None:
            fallback = self.net.fallback(inputs)
            self.val_means["fallback_loss"].update(
                self.compute_loss(fallback, inputs["labels"], mask), weight=len(batch["meta"])
            )
            for row, meta in enumerate(batch["meta"]):
                scores_row = fallback[row, : len(meta["labels"])].float().tolist()
                for b in self.budgets:
                    gain = self._selection_gain(scores_row, meta, b)
                    self.val_means[f"fallback_gain_{_budget_key(b)}"].update(torch.tensor(gain))

    def _selection_gain(self, scores: list[float], meta: dict, budget: float) -> float:
        """Σ labels of the units ``scores`` select at ``budget`` (the floor applied): the linear surrogate."""
        keep = select_units(
            scores, meta["token_counts"], Budget.ratio(budget), min_score=self.scorer_config.min_score
        )
        return sum(y for y, k in zip(meta["labels"], keep) if k)

    def _update_gain(self, scores: list[float], meta: dict) -> None:
        labels, counts = meta["labels"], meta["token_counts"]
        if meta["f_all"] is not None and meta["f_none"] is not None:
            full = meta["f_all"] - meta["f_none"]
        else:
            full = sum(labels)
        for b in self.budgets:
            key = _budget_key(b)
            oracle = select_units(labels, counts, Budget.ratio(b))
            gain = self._selection_gain(scores, meta, b)
            self.val_means[f"gain_{key}"].update(torch.tensor(gain))
            self.gain_sums[f"sel_{key}"].update(torch.tensor(gain))
            self.gain_sums[f"oracle_{key}"].update(torch.tensor(sum(y for y, k in zip(labels, oracle) if k)))
            if full > self.min_gain:
                self.gain_sums[f"sel_helped_{key}"].update(torch.tensor(gain))
                self.gain_sums[f"full_helped_{key}"].update(torch.tensor(full))
                if meta["task"] is not None:
                    sums = self._task_sums.setdefault(meta["task"], {})
                    sums.setdefault(f"sel_{key}", []).append(gain)
                    sums.setdefault(f"full_{key}", []).append(full)

    def on_validation_epoch_end(self) -> None:
        logged = {"val/loss": self.val_means["loss"]}
        logged.update({name: self.val_means[k] for k, name in self.metric_names.items()})
        for b in self.budgets:
            key = _budget_key(b)
            logged[f"val/gain@{b:g}"] = self.val_means[f"gain_{key}"]
            if f"fallback_gain_{key}" in self.val_means:
                logged[f"val/fallback/gain@{b:g}"] = self.val_means[f"fallback_gain_{key}"]
        if "fallback_loss" in self.val_means:
            logged["val/fallback/loss"] = self.val_means["fallback_loss"]
        for name, metric in logged.items():
            value = metric.compute()
            self.log(name, value, prog_bar=name in ("val/loss", "val/spearman"))
            metric.reset()
        for b in self.budgets:
            key = _budget_key(b)
            sel, oracle = self.gain_sums[f"sel_{key}"].compute(), self.gain_sums[f"oracle_{key}"].compute()
            sel_h, full_h = (
                self.gain_sums[f"sel_helped_{key}"].compute(),
                self.gain_sums[f"full_helped_{key}"].compute(),
            )
            nan = torch.tensor(float("nan"))
            self.log(f"val/oracle_frac@{b:g}", sel / oracle if oracle > 0 else nan)
            self.log(f"val/gain_recovered@{b:g}", sel_h / full_h if full_h > 0 else nan)
            for part in ("sel", "oracle", "sel_helped", "full_helped"):
                self.gain_sums[f"{part}_{key}"].reset()
        self._log_per_task()

    def _log_per_task(self) -> None:
        """Validation figures per task (ids ``{task}-{seed}-{index}``) when the data mix several tasks:
        a mixture's mean can hide a task the selector fails on. Summed on this process's share."""
        sums, self._task_sums = self._task_sums, {}
        if len(sums) < 2:
            return
        for task, parts in sorted(sums.items()):
            rhos = parts.get("spearman", [])
            self.log(f"val/task/{task}/n", float(len(rhos)), sync_dist=False)
            if rhos:
                self.log(f"val/task/{task}/spearman", sum(rhos) / len(rhos))
            for b in self.budgets:
                key = _budget_key(b)
                full = sum(parts.get(f"full_{key}", []))
                if full > 0:
                    self.log(f"val/task/{task}/gain_recovered@{b:g}", sum(parts[f"sel_{key}"]) / full)

    @torch.no_grad()
    def fit_novelty(self, batch_size: int = 16) -> dict | None:
        """Fit the novelty fallback (``ScorerConfig.novelty_fallback``) on the training traces' vectors,
        its threshold on the validation traces'; None when the selector has none. Called on the weights
        that are released (an encoder's vectors change with its adapters)."""
        net = self.net
        if net is None or net.novelty is None:
            return None
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None or not datamodule.train_items:
            raise RuntimeError(
                "the novelty fallback is fitted on the training traces: no datamodule has them"
            )
        was_training = net.training
        net.eval()
        try:
            train = self._trace_vectors(datamodule.train_items, batch_size)
            val = datamodule.val_items
            calibration = self._trace_vectors(val, batch_size) if val else train
        finally:
            net.train(was_training)
        info = net.novelty.fit(train, calibration, self.scorer_config.novelty_quantile)
        info["quantile"] = self.scorer_config.novelty_quantile
        info["calibrated_on"] = "validation traces" if val else "training traces (no validation split)"
        return info

    def _trace_vectors(self, items: list[LabelledTrace], batch_size: int) -> torch.Tensor:
        out = []
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            feats = [self._features.get(it.id) or self.selector.featurize(it.view) for it in chunk]
            inputs = {k: v.to(self.device) for k, v in self.selector.collate(feats).items()}
            out.append(self.net.trace_vectors(inputs).float().cpu())
        return torch.cat(out)

    # ------------------------------------------------------------------ optimisation & checkpoints
    def configure_optimizers(self):
        params = [p for p in self.net.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """With a novelty fallback, each head's gradients are clipped on their own: a shared norm would
        let the fallback's gradients shrink the main head's steps (its training then differs from the
        same selector's without a fallback)."""
        fallback = self.net.fallback if self.net is not None else None
        if fallback is None or not gradient_clip_val:
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        own = {id(p) for p in fallback.parameters()}
        trainable = [p for p in self.net.parameters() if p.requires_grad]
        for group in ([p for p in trainable if id(p) not in own], [p for p in trainable if id(p) in own]):
            if gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(group, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(group, gradient_clip_val)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Save the random states (dropout draws from them) and leave the frozen pretrained encoder out
        of resume checkpoints (it is reloaded from its path)."""
        checkpoint["rng_states"] = rng_states()
        if self.scorer_config.backbone != "encoder" or self.net is None:
            return
        frozen = {f"net.{k}" for k, p in self.net.named_parameters() if not p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k not in frozen}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._resume_rng = checkpoint.get("rng_states")

    def on_train_start(self) -> None:
        """A resumed fit continues the random streams where the saved run left them (after the sanity
        check, which draws nothing): its weights end bit-identical to an uninterrupted run's on CPU."""
        states = getattr(self, "_resume_rng", None)
        if states is not None:
            set_rng_states(states)
            self._resume_rng = None

    def card_info(self) -> dict:
        """What the model card reports: pair, data, labeler, counts, metrics."""
        info = dict(self.data_info)
        metrics = {}
        if self._trainer is not None:
            for k, v in self.trainer.callback_metrics.items():
                if k.startswith("val/"):
                    metrics[k.removeprefix("val/")] = float(v)
            info["steps"] = int(self.trainer.global_step)
            datamodule = getattr(self.trainer, "datamodule", None)
            stats = getattr(datamodule, "stats", {}) or {}
            info.update(n_train=stats.get("train"), n_val=stats.get("val"), skipped=stats.get("skipped"))
        info["loss"] = self.loss_name
        info["metrics"] = metrics
        return {
            k: v for k, v in info.items() if v is not None and k not in ("hidden_size", "small_vocab_size")
        }


def _budget_key(b: float) -> str:
    return f"b{round(b * 1000):04d}"
