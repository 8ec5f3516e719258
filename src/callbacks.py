"""Callbacks seqlab adds to every run."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import numpy as np
import torch


class EpochTimer(L.Callback):
    """Seconds per training epoch, validation excluded, logged as `time/train_epoch_s`."""

    def __init__(self) -> None:
        self.train_epoch_seconds: list[float] = []
        self._epoch_start = 0.0
        self._validation_seconds = 0.0
        self._validation_start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()
        self._validation_seconds = 0.0

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation_start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation_seconds += time.perf_counter() - self._validation_start

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = time.perf_counter() - self._epoch_start - self._validation_seconds
        self.train_epoch_seconds.append(seconds)
        pl_module.log("time/train_epoch_s", seconds, on_step=False, on_epoch=True)


class BatchSeeding(L.Callback):
    """Seeds torch's global generator from (seed, epoch, batch) before every training batch.

    Lightning does not checkpoint RNG state, and a resumed fit draws from the generator a
    different number of times before its first batch than an uninterrupted one (dataloader
    iterators draw a base seed). Making dropout's randomness a pure function of the batch, like the
    batch order, lets a resumed run draw exactly what the uninterrupted run would have drawn.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        words = np.random.SeedSequence([self.seed, trainer.current_epoch, batch_idx])
        high, low = (int(word) for word in words.generate_state(2))
        torch.manual_seed(high << 32 | low)
