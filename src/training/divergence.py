"""Stop a run whose loss or weights became NaN or infinite, before anything is saved."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


class TrainingDiverged(Exception):
    """The loss or the weights became NaN or infinite."""


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
