"""How many samples an evaluation really covered, summed over all ranks.

Under DDP each rank evaluates its own shard; the count says whether the shards together covered
the split exactly once (it equals the split size unless `limit_*_batches` cut it short).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


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
