"""Callbacks seqlab adds to every run."""

from __future__ import annotations

import time

import lightning as L


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
