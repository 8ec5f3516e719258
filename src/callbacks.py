"""Callbacks seqlab adds to every run."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import numpy as np
import torch

from src.checkpoints import EPOCH_ROW_KEY
from src.run_failures import TrainingDiverged


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
        torch.manual_seed(high << 32 | low)


class EpochRowInCheckpoints(L.Callback):
    """Puts the epoch's training metrics into the checkpoints written at the epoch's end.

    Lightning writes those checkpoints a few milliseconds before it hands the same metrics to
    the loggers. A run killed in between resumes from the new checkpoint but never logged the
    epoch's row; a resumed CSV logger writes it from the checkpoint (src/loggers.py).
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
            # Lightning logs an epoch's metrics at the step of its last batch.
            "step": trainer.global_step - 1,
        }


class DivergenceGuard(L.Callback):
    """Stops a run whose loss or weights became NaN or infinite, before anything is saved.

    The loss is checked after every step and the weights before each epoch's checkpoints (which
    Lightning writes after every other callback's epoch end), so no checkpoint of a diverged model
    is ever written, as best or as last.
    """

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None or bool(torch.isfinite(loss).all()):
            return
        epoch, step = trainer.current_epoch, trainer.global_step
        where = f"epoch {epoch}, batch {batch_idx} (optimizer step {step})"
        raise TrainingDiverged(
            f"the training loss became {loss.item()} at {where}. {_likely_cause(pl_module, batch)} "
            "No checkpoint of the diverged model was saved."
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        bad = [name for name, p in pl_module.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise TrainingDiverged(
                f"the weights {', '.join(bad[:3])} became NaN or infinite in epoch "
                f"{trainer.current_epoch} (step {trainer.global_step}). "
                f"{_likely_cause(pl_module, None)} No checkpoint of the diverged model was saved."
            )


def _likely_cause(pl_module: L.LightningModule, batch: Any) -> str:
    if isinstance(batch, dict) and not all(torch.isfinite(t).all() for t in batch.values()):
        return "Likely cause: the batch itself holds NaN or infinite values; check the data."
    optimizer = pl_module.trainer.optimizers[0] if pl_module.trainer.optimizers else None
    lr = optimizer.param_groups[0]["lr"] if optimizer is not None else None
    return (
        f"Likely cause: a learning rate too high for this model (lr={lr}); lower optimizer.lr, "
        "or clip gradients with trainer.gradient_clip_val=1.0."
    )
