"""Model outputs for every sample of a split, in the split's order, for plots and predictions."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from src.data.in_memory import InMemoryDataModule, batch_loader
from src.models.module import SequenceModule


@dataclass(frozen=True)
class SplitOutputs:
    inputs: Tensor  # the split's stored inputs (MNIST: uint8 images, before any sequence layout)
    targets: Tensor  # [N, 1] regression targets or [N] class labels
    outputs: Tensor  # [N, 1] predictions or [N, classes] logits


@torch.inference_mode()
def predict_split(
    module: SequenceModule, datamodule: InMemoryDataModule, split: str
) -> SplitOutputs:
    dataset = datamodule.splits[split]
    was_training = module.training
    module.eval()
    outputs = []
    # The weights' dtype (bf16-true, 64-true): Lightning casts the inputs in its own loops only.
    dtype = next(module.parameters()).dtype
    for batch in batch_loader(dataset, datamodule.batch_size, shuffle=False):
        batch = {name: tensor.to(module.device) for name, tensor in batch.items()}
        batch = datamodule.on_after_batch_transfer(batch, 0)
        x = batch["x"].to(dtype) if batch["x"].is_floating_point() else batch["x"]
        outputs.append(module(x, batch.get("lengths")).float().cpu())
    module.train(was_training)
    return SplitOutputs(
        inputs=dataset.tensors["x"].cpu(),
        targets=dataset.tensors["y"].cpu(),
        outputs=torch.cat(outputs),
    )
