"""Callbacks seqlab adds to every run: epoch timing, per-batch seeding, the epoch row in
checkpoints, and the count of samples evaluated."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import numpy as np
import torch

from src.training.checkpoints import EPOCH_ROW_KEY

# How often the per-step guards read a value back from the device. On a GPU each read waits for
# the device's queue to drain; once in 16 steps lets the queue run that deep, and still notices a
# diverged loss or a signal within a fraction of a second.
READ_EVERY_N_STEPS = 16


def batches_trained(trainer: L.Trainer, batch_idx: int) -> int:
    """Training batches done in this epoch so far, the call just ended included. Lightning's
    `batch_idx` counts its calls of training_step, which take `steps_per_call` batches each;
    seqlab's DataModules keep the place in batches (a resumed run's included)."""
    position = getattr(trainer.datamodule, "position", None)
    if position is not None and position.epoch == trainer.current_epoch:
        return int(position.batches_done)
    return batch_idx + 1


class EpochTimer(L.Callback):
    """Seconds per training epoch, validation excluded, logged as `time/train_epoch_s`."""

    def __init__(self) -> None:
        self.train_epoch_seconds: list[float] = []
        self._epoch_start: float | None = None
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
        if self._epoch_start is None:
            return  # an epoch resumed mid-way: only part of it ran here
        seconds = time.perf_counter() - self._epoch_start - self._validation_seconds
        self._epoch_start = None
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
        seed_generators(high << 32 | low, pl_module.device)


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
