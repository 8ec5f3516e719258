"""Losses over the steps of a sequence that have a target (head=every_step)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def masked_loss(task: str, output: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
    """The mean loss over the counted steps: cross-entropy (classification: output [B, T, C],
    target [B, T]) or binary cross-entropy summed over the labels (multilabel: target
    [B, T, C] multi-hot). Steps outside `mask` [B, T] (padding, steps without a target) never
    count."""
    if task == "classification":
        per_step = F.cross_entropy(output.flatten(0, 1), target.flatten(), reduction="none")
        per_step = per_step.view(target.shape)
    elif task == "multilabel":
        per_step = F.binary_cross_entropy_with_logits(
            output, target.to(output.dtype), reduction="none"
        ).sum(dim=-1)
    else:
        raise ValueError(f"per-step losses are for classification and multilabel, not {task!r}")
    if mask is None:
        return per_step.mean()
    # Divided by the count on the device: no read back to the host.
    return (per_step * mask).sum() / mask.sum().clamp(min=1)


def counted_steps(batch: dict[str, Tensor]) -> Tensor | int:
    mask = batch.get("mask")
    if mask is not None:
        return mask.sum()
    return batch["y"].shape[0] * batch["y"].shape[1]
