"""Dropout's randomness as a pure function of the batch.

Lightning does not checkpoint RNG state, and a resumed fit draws from the generator a different
number of times before its first batch than an uninterrupted one (dataloader iterators draw a
base seed). Seeding the generator from (seed, epoch, batch) before every training batch, like the
batch order, lets a resumed run draw exactly what the uninterrupted run would have drawn, and
makes the draws the same however many batches a call of training_step takes.
"""

from __future__ import annotations

import numpy as np
import torch


def seed_batch(seed: int, epoch: int, batch: int, device: torch.device) -> None:
    """Seed the generators for batch `batch` (counted from 0 in its epoch) of epoch `epoch`."""
    words = np.random.SeedSequence([seed, epoch, batch])
    high, low = (int(word) for word in words.generate_state(2))
    seed_generators(high << 32 | low, device)


def seed_generators(seed: int, device: torch.device) -> None:
    """Seed the CPU generator and that of the device the module trains on. Not
    torch.manual_seed: with CUDA, XPU and MTIA uninitialised it queues a lazy seeding call for
    each, formatting a stack trace every time, which cost 4 ms a step (a sixth of an LSTM
    multiplication step) on CPU."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)  # the current device: the one this rank trains on
    elif device.type != "cpu" and hasattr(getattr(torch, device.type, None), "manual_seed"):
        getattr(torch, device.type).manual_seed(seed)
