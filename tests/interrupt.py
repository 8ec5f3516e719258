"""Callbacks that stop a run as a crash, a killed job or a signal would, for resume tests."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint


class Interrupted(RuntimeError):
    pass


class InterruptAtEpoch(L.Callback):
    """Raise at the start of epoch `epoch` (0-based), after the previous epoch's checkpoints, or
    with `before_checkpoint` at the end of epoch `epoch`, before its checkpoints are written."""

    def __init__(self, epoch: int, before_checkpoint: bool = False) -> None:
        self.epoch = epoch
        self.before_checkpoint = before_checkpoint

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.before_checkpoint and trainer.current_epoch == self.epoch:
            raise Interrupted(f"interrupted at the start of epoch {self.epoch}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.before_checkpoint and trainer.current_epoch == self.epoch:
            raise Interrupted(f"interrupted at the end of epoch {self.epoch}")


class SignalAtBatch(L.Callback):
    """Send this process a real signal when training reaches batch `batch` of epoch `epoch`:
    the handlers installed for it run exactly as for a signal from outside, at a known point.
    Only in a fresh fit: the resumed run, whose config holds this callback too, goes on."""

    def __init__(self, epoch: int, batch: int, signum: int, rank: int | None = None) -> None:
        self.epoch = epoch
        self.batch = batch
        self.signum = signum
        self.rank = rank  # under DDP: signal only this rank (None: every rank)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        here = (trainer.current_epoch, batch_idx) == (self.epoch, self.batch)
        this_rank = self.rank is None or trainer.global_rank == self.rank
        if trainer.ckpt_path is None and here and this_rank:
            os.kill(os.getpid(), self.signum)


class SetLearningRate(L.Callback):
    """Set every optimizer's learning rate to `lr` from epoch `epoch` on."""

    def __init__(self, epoch: int, lr: float) -> None:
        self.epoch = epoch
        self.lr = lr

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch >= self.epoch:
            for optimizer in trainer.optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = self.lr


class KillAfterEpochCheckpoints(Checkpoint):
    """SIGKILL this process right after the checkpoints of epoch `epoch` are written and before
    Lightning logs that epoch's training metrics: as a Checkpoint, Lightning runs it after the
    ModelCheckpoints. Only in a fresh fit, like SignalAtBatch."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is None and trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


class SignalAtTestBatch(L.Callback):
    """Send this process a real signal at the first test batch, after training has ended; once,
    as `marker` records (the resumed run's config holds this callback too)."""

    def __init__(self, signum: int, marker: str) -> None:
        self.signum = signum
        self.marker = Path(marker)

    def on_test_batch_start(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx == 0 and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), self.signum)
