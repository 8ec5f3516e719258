"""The LightningModule: a thin training wrapper around any `SequenceModel`.

It knows only what the data config tells it: regression or classification, the number of
classes, the tolerance of a correct regression. Metrics live in torchmetrics collections that
accumulate on the device and synchronise across ranks once per epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from src.models.metrics import ToleranceAccuracy, WeightedMean

Task = Literal["regression", "classification"]
# The state of the training epoch's metric sums (persistent: saved in checkpoints).
TRAINING_SUMS = ("train_metrics.", "train_loss.")
OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]


def task_metrics(task: Task, tolerance: float | None, num_classes: int | None) -> MetricCollection:
    if task == "regression":
        metrics: dict[str, Any] = {"mse": MeanSquaredError(), "mae": MeanAbsoluteError()}
        if tolerance is not None:
            metrics["tolerance_accuracy"] = ToleranceAccuracy(tolerance)
        return MetricCollection(metrics)
    if task == "classification":
        if num_classes is None:
            raise ValueError("classification needs num_classes")
        # validate_args reads the targets back to the host (torch.unique) on every update.
        accuracy = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        return MetricCollection({"acc": accuracy})
    raise ValueError(f"unknown task {task!r}; available: regression, classification")


class SequenceModule(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        *,
        task: Task,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        monitor: str = "val/loss",
        tolerance: float | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.task = task
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.monitor = monitor
        metrics = task_metrics(task, tolerance, num_classes)
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        # The epoch loss as a torchmetrics mean, whose sums sync exactly across DDP ranks;
        # Lightning's sync_dist averages integer sample counts, which rounds when shards differ.
        # A NaN loss is the divergence guard's to catch; no per-step NaN check on the host here.
        self.train_loss, self.val_loss, self.test_loss = (WeightedMean() for _ in range(3))
        # The training epoch's sums so far go into checkpoints: a run stopped mid-epoch resumes
        # them, and logs the same epoch figures as a run that was never stopped.
        self.train_metrics.persistent(True)
        self.train_loss.persistent(True)
        self.test_confusion = (
            MulticlassConfusionMatrix(num_classes) if task == "classification" else None
        )

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.net(x, lengths)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        if self.task == "regression":
            return F.mse_loss(output, target)
        return F.cross_entropy(output, target)

    def predictions(self, output: Tensor) -> Tensor:
        return output if self.task == "regression" else output.argmax(dim=-1)

    def _step(self, batch: dict[str, Tensor], split: str) -> tuple[Tensor, Tensor]:
        output = self(batch["x"], batch.get("lengths"))
        loss = self.loss(output, batch["y"])
        predictions = self.predictions(output.detach())
        # Only on-device updates per step: Lightning's self.log costs milliseconds a call, as
        # much as a whole step of these small models, so values are logged once per epoch.
        metrics, mean_loss = self._split_state(split)
        metrics.update(predictions, batch["y"])
        mean_loss.update(loss.detach(), weight=batch["y"].shape[0])
        return loss, predictions

    def _split_state(self, split: str) -> tuple[MetricCollection, WeightedMean]:
        return getattr(self, f"{split}_metrics"), getattr(self, f"{split}_loss")

    def _log_epoch(self, split: str) -> None:
        metrics, mean_loss = self._split_state(split)
        # compute() synchronises the states across ranks, so every rank logs the same values.
        self.log_dict({f"{split}/loss": mean_loss.compute(), **metrics.compute()})
        metrics.reset()
        mean_loss.reset()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")[0]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        _, predictions = self._step(batch, "test")
        if self.test_confusion is not None:
            self.test_confusion.update(predictions, batch["y"])

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_start(self) -> None:
        if self.test_confusion is not None:
            self.test_confusion.reset()

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.monitor, "interval": "epoch"},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Under DDP each rank holds its own share of the epoch's sums; the checkpoint gets their
        # total (a no-op in one process), which rank 0 alone takes back on resume.
        with ExitStack() as synced:
            for metric in (self.train_loss, *self.train_metrics.values()):
                synced.enter_context(metric.sync_context())
            totals = self.state_dict()
        state = checkpoint["state_dict"]
        for name in state:
            if name.startswith(TRAINING_SUMS):
                state[name] = totals[name]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Ranks > 0 start the epoch's sums empty: rank 0 holds the total. So do checkpoints from
        # before the sums were saved.
        other_rank = self._trainer is not None and self._trainer.global_rank > 0
        state = checkpoint.get("state_dict", {})
        for name, empty in self.state_dict().items():
            if name.startswith(TRAINING_SUMS) and (other_rank or name not in state):
                state[name] = empty
