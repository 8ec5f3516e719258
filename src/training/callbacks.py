"""Callbacks seqlab adds to every run: epoch timing, the epoch row in checkpoints, and the count
of samples evaluated."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch

from src.training.checkpoints import EPOCH_ROW_KEY

# How often the per-step guards read a value back from the device. On a GPU each read waits for
# the device's queue to drain; once in 16 steps lets the queue run that deep, and still notices a
# diverged loss or a signal within a fraction of a second.
READ_EVERY_N_STEPS = 16


def read_due(trainer: L.Trainer, batch_idx: int, every_n_steps: int = READ_EVERY_N_STEPS) -> bool:
    """Whether a guard reads back from the device after call `batch_idx` of training_step: about
    every `every_n_steps` batches, whichever number of them a call takes (`steps_per_call`)."""
    per_call = getattr(trainer.datamodule, "steps_per_call", 1)
    return (batch_idx + 1) % max(1, every_n_steps // per_call) == 0


class EpochTimer(L.Callback):
    """Seconds per training epoch, validation excluded, logged as `time/train_epoch_s`."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self.clock = clock or time.perf_counter
        self.train_epoch_seconds: list[float] = []
        self._epoch_start: float | None = None
        self._validation_seconds = 0.0
        self._validation_start = 0.0

    def _now(self, pl_module: L.LightningModule) -> float:
        return self.clock()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = self._now(pl_module)
        self._validation_seconds = 0.0

    # The whole validation loop, from its setup to its logging (the module computes and logs
    # its metrics after every callback's on_validation_epoch_end).
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation_start = self._now(pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation_seconds += self._now(pl_module) - self._validation_start

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._epoch_start is None:
            return  # an epoch resumed mid-way: only part of it ran here
        seconds = self._now(pl_module) - self._epoch_start - self._validation_seconds
        self._epoch_start = None
        self.train_epoch_seconds.append(seconds)
        pl_module.log("time/train_epoch_s", seconds, on_step=False, on_epoch=True)


class EpochRowInCheckpoints(L.Callback):
    """Puts the epoch's training metrics into the checkpoints written at the epoch's end.

    Lightning writes those checkpoints a few milliseconds before it hands the same metrics to
    the loggers. A run killed in between resumes from the new checkpoint but never logged the
    epoch's row; a resumed CSV logger writes it from the checkpoint (src/tracking/loggers.py).
    """

    def __init__(self) -> None:
        self._at_epoch_end = False

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._at_epoch_end = False

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Before the module's own epoch end logs the metrics, and before any checkpoint.
        self._at_epoch_end = True

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if not self._at_epoch_end:
            return
        metrics = trainer.callback_metrics
        checkpoint[EPOCH_ROW_KEY] = {
            "epoch": trainer.current_epoch,
            **{k: float(v) for k, v in metrics.items() if k.startswith(("train/", "time/"))},
            # Lightning logs an epoch's metrics at the logger step of its last call.
            "step": trainer.fit_loop.epoch_loop._batches_that_stepped - 1,
        }


# Under DDP each rank evaluates its own shard; the count says whether the shards together covered
# the split exactly once (it equals the split size unless `limit_*_batches` cut it short).


class EvaluatedSamples(L.Callback):
    """Samples seen in the last full validation epoch and in the last test, over all ranks."""

    def __init__(self) -> None:
        self.val_samples: int | None = None
        self.test_samples: int | None = None
        self._seen = 0

    def _count(self, batch: Any) -> None:
        self._seen += int(batch["y"].shape[0])

    def _total(self, trainer: L.Trainer, pl_module: L.LightningModule) -> int:
        seen = torch.tensor(self._seen, device=pl_module.device)
        # Every rank reaches the epoch end, so this collective cannot leave one waiting.
        return int(trainer.strategy.reduce(seen, reduce_op="sum"))

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._seen = 0

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        self._count(batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = self._total(trainer, pl_module)
        if not trainer.sanity_checking:
            self.val_samples = total

    def state_dict(self) -> dict[str, Any]:
        # A run resumed after its last epoch validates no more: it reports the saved count.
        return {"val_samples": self.val_samples}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.val_samples = state_dict.get("val_samples")

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._seen = 0

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        self._count(batch)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.test_samples = self._total(trainer, pl_module)
