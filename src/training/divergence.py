"""Stop a run whose loss or weights became NaN or infinite, before anything is saved."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from src.data.in_memory import batches_trained
from src.training.callbacks import READ_EVERY_N_STEPS, read_due


class TrainingDiverged(Exception):
    """The loss or the weights became NaN or infinite."""


class DivergenceGuard(L.Callback):
    """Stops a run whose loss or weights became NaN or infinite, before anything is saved.

    Every step's loss is checked on the device, which keeps the first non-finite one and its
    batch; the host reads that record every `read_every_n_steps` steps and before any checkpoint
    is written, so no checkpoint of a diverged model is ever saved (best, last, or on a signal).
    The weights are checked at each epoch's end, before that epoch's checkpoints.
    """

    def __init__(self, read_every_n_steps: int = READ_EVERY_N_STEPS) -> None:
        self.read_every_n_steps = read_every_n_steps
        # The first non-finite loss since the last read: its batch in the epoch (-1: none yet),
        # its optimizer step, its value; and the epoch they belong to.
        self._bad_batch: Tensor | None = None
        self._bad_step: Tensor | None = None
        self._bad_loss: Tensor | None = None
        self._epoch = 0
        self._call_start_step = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._bad_batch = self._bad_step = self._bad_loss = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._call_start_step = trainer.global_step

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        # One loss per batch of the call (steps_per_call), in order.
        losses = loss.detach().float().reshape(-1)
        batches = len(losses)
        if self._bad_batch is None:
            self._bad_batch = torch.full((), -1, dtype=torch.long, device=losses.device)
            self._bad_step = torch.zeros((), dtype=torch.long, device=losses.device)
            self._bad_loss = torch.zeros((), device=losses.device)
            self._epoch = trainer.current_epoch
        bad = ~torch.isfinite(losses)
        first = bad.any() & (self._bad_batch < 0)
        index = bad.int().argmax()  # the first bad one's (0 when none is bad)
        # Truncated BPTT steps once per chunk: the steps of a batch, then its last one's number.
        steps_per_batch = (trainer.global_step - self._call_start_step) // batches
        first_batch = batches_trained(trainer, batch_idx) - batches
        self._bad_batch = torch.where(first, first_batch + index, self._bad_batch)
        step = self._call_start_step + (index + 1) * steps_per_batch
        self._bad_step = torch.where(first, step, self._bad_step)
        self._bad_loss = torch.where(first, losses[index], self._bad_loss)
        if read_due(trainer, batch_idx, self.read_every_n_steps):
            self._raise_if_diverged(trainer, pl_module)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Raising here aborts the save before a byte is written.
        self._raise_if_diverged(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._raise_if_diverged(trainer, pl_module)
        bad = [name for name, p in pl_module.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise TrainingDiverged(
                f"the weights {', '.join(bad[:3])} became NaN or infinite in epoch "
                f"{trainer.current_epoch} (step {trainer.global_step}). "
                f"{_likely_cause(trainer)} No checkpoint of the diverged model was saved."
            )

    def _raise_if_diverged(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bad_batch is None or self._bad_loss is None or self._bad_step is None:
            return
        batch_idx = int(self._bad_batch)
        # Under DDP every rank decides alike: a rank that raised alone would leave the others
        # waiting in their next collective.
        if not trainer.strategy.reduce_boolean_decision(batch_idx >= 0, all=False):
            return
        if batch_idx < 0:
            raise TrainingDiverged(
                f"the training loss became NaN or infinite on another rank in epoch {self._epoch}. "
                f"{_likely_cause(trainer)} No checkpoint of the diverged model was saved."
            )
        where = f"epoch {self._epoch}, batch {batch_idx} (optimizer step {int(self._bad_step)})"
        raise TrainingDiverged(
            f"the training loss became {float(self._bad_loss)} at {where}. "
            f"{_likely_cause(trainer)} No checkpoint of the diverged model was saved."
        )


def _likely_cause(trainer: L.Trainer) -> str:
    dataset = getattr(trainer.train_dataloader, "dataset", None)
    tensors = getattr(dataset, "tensors", {})
    if any(t.is_floating_point() and not torch.isfinite(t).all() for t in tensors.values()):
        return "Likely cause: the training data itself holds NaN or infinite values; check it."
    optimizer = trainer.optimizers[0] if trainer.optimizers else None
    lr = optimizer.param_groups[0]["lr"] if optimizer is not None else None
    return (
        f"Likely cause: a learning rate too high for this model (lr={lr}); lower optimizer.lr, "
        "or clip gradients with trainer.gradient_clip_val=1.0."
    )
