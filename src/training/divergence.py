"""Stop a run whose loss or weights became NaN or infinite, before anything is saved."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from src.training.callbacks import READ_EVERY_N_STEPS


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
        # The first non-finite loss since the last read: its batch (-1: none yet), its value.
        self._bad_batch: Tensor | None = None
        self._bad_loss: Tensor | None = None
        self._where = (0, 0)  # the epoch and optimizer step of the batch counted from

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._bad_batch = self._bad_loss = None

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
        loss = loss.detach().float()
        if self._bad_batch is None:
            self._bad_batch = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._bad_loss = torch.zeros((), device=loss.device)
            self._where = (trainer.current_epoch, trainer.global_step - batch_idx)
        first = ~torch.isfinite(loss) & (self._bad_batch < 0)
        self._bad_batch = torch.where(first, batch_idx, self._bad_batch)
        self._bad_loss = torch.where(first, loss, self._bad_loss)
        if (batch_idx + 1) % self.read_every_n_steps == 0:
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
        if self._bad_batch is None or self._bad_loss is None:
            return
        batch_idx = int(self._bad_batch)
        if batch_idx < 0:
            return
        epoch, first_step = self._where
        where = f"epoch {epoch}, batch {batch_idx} (optimizer step {first_step + batch_idx})"
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
