"""A callback that stops a run as a crash or a killed job would, for resume tests."""

from __future__ import annotations

import lightning as L


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
