"""Metrics of the tasks that torchmetrics does not ship."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class ToleranceAccuracy(Metric):
    """Share of predictions within `tolerance` of the target: |prediction - target| <= tolerance.

    The multiplication problem's "correct" criterion (tolerance 0.04). Counts are summed across
    batches and, under DDP, across ranks, so the result is exact over the whole split.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, tolerance: float = 0.04, **kwargs: object) -> None:
        super().__init__(**kwargs)
        if tolerance <= 0:
            raise ValueError(f"tolerance must be > 0, got {tolerance}")
        self.tolerance = float(tolerance)  # an int past 2**63 would not compare with a tensor
        self.add_state("correct", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        if preds.shape != target.shape:
            raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} differ")
        self.correct += ((preds - target).abs() <= self.tolerance).sum()
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

    def update(self, value: Tensor, weight: float) -> None:
        self.mean_value += value.detach().float() * weight
        self.weight += weight

    def compute(self) -> Tensor:
        return self.mean_value / self.weight
