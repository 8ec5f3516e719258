"""Metrics of the tasks that torchmetrics does not ship."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric


class ToleranceAccuracy(Metric):
    """Share of predictions within `tolerance` of the target: |prediction - target| <= tolerance,
    or < tolerance when not `inclusive`.

    The multiplication problem's "correct" criterion (tolerance 0.04, inclusive); the adding
    problem's is strict ("below 0.04"). Counts are summed across batches and, under DDP, across
    ranks, so the result is exact over the whole split.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, tolerance: float = 0.04, inclusive: bool = True, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.inclusive = inclusive
        if tolerance <= 0:
            raise ValueError(f"tolerance must be > 0, got {tolerance}")
        self.tolerance = float(tolerance)  # an int past 2**63 would not compare with a tensor
        self.add_state("correct", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        if preds.shape != target.shape:
            raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} differ")
        error = (preds - target).abs()
        within = error <= self.tolerance if self.inclusive else error < self.tolerance
        self.correct += within.sum()
        self.total += target.numel()

    def compute(self) -> Tensor:
        return self.correct.float() / self.total


class WeightedMean(Metric):
    """The mean of values weighted by their sample counts: an epoch's loss from its batches'.

    torchmetrics' MeanMetric checks each value for NaN on the host (a device sync per step), and
    with that check disabled it drops the weights. This keeps MeanMetric's state names, so
    checkpoints written with it load unchanged.
    """

    is_differentiable = False
    full_state_update = False

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("mean_value", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("weight", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, value: Tensor, weight: float | Tensor) -> None:
        """One value and its weight, or a vector of each."""
        self.mean_value += (value.detach().float() * weight).sum()
        self.weight += weight.sum() if isinstance(weight, Tensor) else weight

    def compute(self) -> Tensor:
        return self.mean_value / self.weight


class _CountMetric(Metric):
    """Correct and total counts summed over batches and ranks; the result is their ratio."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("correct", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def _count(self, correct: Tensor, counted: Tensor) -> None:
        # Masks weigh instead of select: boolean indexing would read the count back to the host.
        self.correct += (correct & counted).sum()
        self.total += counted.sum()

    def compute(self) -> Tensor:
        return self.correct.float() / self.total.clamp(min=1)


def _all_steps(like: Tensor) -> Tensor:
    return torch.ones(like.shape[:2], dtype=torch.bool, device=like.device)


class ProbabilityErrorAccuracy(_CountMetric):
    """Share of sequences whose every class probability lies within `threshold` of the one-hot
    target: the 1997 paper's rule for its classification outputs ("the final absolute error of
    all output units is below 0.3"), applied to softmax probabilities."""

    def __init__(self, threshold: float = 0.3, **kwargs: object) -> None:
        super().__init__(**kwargs)
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.threshold = float(threshold)

    def update(self, logits: Tensor, target: Tensor) -> None:
        probabilities = logits.float().softmax(dim=-1)
        one_hot = torch.nn.functional.one_hot(target, probabilities.size(-1)).to(probabilities)
        correct = ((probabilities - one_hot).abs() < self.threshold).all(dim=-1)
        self._count(correct, torch.ones_like(correct))


class StepAccuracy(_CountMetric):
    """Share of the counted steps whose predicted class is the target: `logits` [B, T, C],
    `target` [B, T], `mask` [B, T] (the steps that count)."""

    def update(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        correct = logits.argmax(dim=-1) == target
        self._count(correct, _all_steps(correct) if mask is None else mask)


class KeyStepAccuracy(StepAccuracy):
    """StepAccuracy on the task's key steps only (`key_mask`): the recalled symbols of the copy
    task. Its own class so the collection's keyword routing hands it `key_mask`."""

    def update(self, logits: Tensor, target: Tensor, key_mask: Tensor) -> None:  # type: ignore[override]
        super().update(logits, target, key_mask)


def next_sets_predicted(logits: Tensor, target: Tensor) -> Tensor:
    """[B, T] whether the units of the possible next symbols (`target`, multi-hot [B, T, C]) are
    the most active ones at each step: the 1997 paper's rule for the Reber grammar. A step with
    no possible symbol (padding) counts as predicted."""
    inf = torch.finfo(logits.dtype).max
    weakest_possible = torch.where(target.bool(), logits, inf).amin(dim=-1)
    strongest_other = torch.where(target.bool(), -inf, logits).amax(dim=-1)
    return weakest_possible > strongest_other


class SequencesPredicted(_CountMetric):
    """Share of sequences whose every counted step has its next-symbol set predicted."""

    def update(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        predicted = next_sets_predicted(logits, target)
        mask = _all_steps(predicted) if mask is None else mask
        self._count((predicted | ~mask).all(dim=-1), mask.any(dim=-1))


class SetStepAccuracy(_CountMetric):
    """Share of the counted steps whose next-symbol set is predicted."""

    def update(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        predicted = next_sets_predicted(logits, target)
        self._count(predicted, _all_steps(predicted) if mask is None else mask)


class KeySetAccuracy(SetStepAccuracy):
    """SetStepAccuracy on the key steps (`key_mask`): the Reber grammar's penultimate symbol."""

    def update(self, logits: Tensor, target: Tensor, key_mask: Tensor) -> None:  # type: ignore[override]
        super().update(logits, target, key_mask)


class BitsPerSymbol(Metric):
    """Cross-entropy in bits, averaged over the counted steps: bits per character on text."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("nats", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        nats = torch.nn.functional.cross_entropy(
            logits.float().flatten(0, 1), target.flatten(), reduction="none"
        )
        mask = _all_steps(target) if mask is None else mask
        self.nats += (nats * mask.flatten()).sum().double()
        self.total += mask.sum()

    def compute(self) -> Tensor:
        return (self.nats / self.total.clamp(min=1) / math.log(2)).float()
