"""The LightningModule: a thin training wrapper around any `SequenceModel`.

It knows only what the data config tells it: regression, classification or multi-label, the
number of classes, the tolerance of a correct regression, the task's extra metrics. A batch is
`x`, `y` and optionally `lengths` (valid steps), `mask` (the steps whose targets count, for a
model with head=every_step) and `key_mask` (steps a metric reports on their own). Metrics live
in torchmetrics collections that accumulate on the device and synchronise across ranks once per
epoch. With `tbptt_steps` it trains by truncated backpropagation through time (tbptt.py).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from src.data.in_memory import batches_trained, per_rank_batch_size
from src.models import optimizer_steps, tbptt
from src.models.losses import counted_steps, masked_loss
from src.models.metrics import (
    BitsPerSymbol,
    KeySetAccuracy,
    KeyStepAccuracy,
    ProbabilityErrorAccuracy,
    SequencesPredicted,
    SetStepAccuracy,
    StepAccuracy,
    ToleranceAccuracy,
    WeightedMean,
)
from src.models.seeding import seed_batch

Task = Literal["regression", "classification", "multilabel"]
TASKS = ("regression", "classification", "multilabel")
# The state of the training epoch's metric sums (persistent: saved in checkpoints).
TRAINING_SUMS = ("train_metrics.", "train_loss.")
OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]


# The metrics a task's config may ask for by name (data.metrics), beyond its task's own.
EXTRA_METRICS: dict[str, Callable[..., Any]] = {
    "probability_error_accuracy": lambda **_: ProbabilityErrorAccuracy(0.3),
    "key_acc": lambda task, **_: KeySetAccuracy() if task == "multilabel" else KeyStepAccuracy(),
    "bits_per_symbol": lambda **_: BitsPerSymbol(),
}


def task_metrics(
    task: Task,
    tolerance: float | None,
    num_classes: int | None,
    *,
    every_step: bool = False,
    extra: tuple[str, ...] = (),
    inclusive_tolerance: bool = True,
) -> MetricCollection:
    if task == "regression":
        if every_step:
            raise ValueError("regression targets are read at the last step: use head=last")
        metrics: dict[str, Any] = {"mse": MeanSquaredError(), "mae": MeanAbsoluteError()}
        if tolerance is not None:
            metrics["tolerance_accuracy"] = ToleranceAccuracy(tolerance, inclusive_tolerance)
    elif task == "classification":
        if num_classes is None:
            raise ValueError("classification needs num_classes")
        # validate_args reads the targets back to the host (torch.unique) on every update.
        accuracy = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        metrics = {"acc": StepAccuracy() if every_step else accuracy}
    elif task == "multilabel":
        if not every_step:
            raise ValueError("multilabel targets are per step: use head=every_step")
        metrics = {"step_acc": SetStepAccuracy(), "sequence_acc": SequencesPredicted()}
    else:
        raise ValueError(f"unknown task {task!r}; available: {', '.join(TASKS)}")
    for name in extra:
        if name not in EXTRA_METRICS:
            raise ValueError(f"unknown metric {name!r}; available: {', '.join(EXTRA_METRICS)}")
        metrics[name] = EXTRA_METRICS[name](task=task)
    # No compute groups: metrics with the same state names (counts) must never be merged.
    return MetricCollection(metrics, compute_groups=False)


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
        inclusive_tolerance: bool = True,
        num_classes: int | None = None,
        metrics: tuple[str, ...] = (),
        tbptt_steps: int | None = None,
        steps_per_call: int = 1,
        batch_size: int | None = None,
        batch_seed: int | None = None,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
    ) -> None:
        super().__init__()
        self.net = net
        self.task = task
        self.every_step = getattr(net, "head_mode", "last") == "every_step"
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.monitor = monitor
        # Truncated BPTT steps the optimizer once per chunk, and `steps_per_call` > 1 hands
        # the module several batches per Lightning step (`batch_size` each, global): either
        # way the module steps itself (and clips: Lightning refuses to clip for a module that
        # optimizes manually). Lightning's loop costs about 1 ms a step, as much as a whole
        # step of these small models; over several batches that cost is shared.
        self.tbptt_steps = tbptt_steps
        if steps_per_call > 1 and batch_size is None:
            raise ValueError("steps_per_call > 1 needs the batch_size to split the calls by")
        self.steps_per_call = steps_per_call
        self.batch_size = batch_size
        # With dropout, the generator is seeded before every training batch (src/models/seeding.py).
        self.batch_seed = batch_seed
        self.automatic_optimization = tbptt_steps is None and steps_per_call == 1
        self.gradient_clip_val = gradient_clip_val
        self.gradient_clip_algorithm = gradient_clip_algorithm
        # Set when training starts: whether a manual step may skip Lightning's wrappers.
        self._direct_steps = False
        metrics = task_metrics(
            task,
            tolerance,
            num_classes,
            every_step=self.every_step,
            extra=tuple(metrics),
            inclusive_tolerance=inclusive_tolerance,
        )
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
            MulticlassConfusionMatrix(num_classes)
            if task == "classification" and not self.every_step
            else None
        )

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.net(x, lengths)

    def loss(self, output: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        """The mean loss over the batch's samples, or over its counted steps (`mask`)."""
        if self.task == "regression":
            return F.mse_loss(output, target)
        if self.every_step:
            return masked_loss(self.task, output, target, mask)
        return F.cross_entropy(output, target)

    def predictions(self, output: Tensor) -> Tensor:
        return output if self.task == "regression" else output.argmax(dim=-1)

    def _update_metrics(self, split: str, output: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """Per-step metrics read the logits, with the masks; the others the predictions."""
        metrics, _ = self._split_state(split)
        output = output.detach()
        if self.every_step:
            masks = {name: batch[name] for name in ("mask", "key_mask") if name in batch}
            metrics.update(output, batch["y"], **masks)
            return output
        predictions = self.predictions(output)
        for metric in metrics.values():
            if isinstance(metric, ProbabilityErrorAccuracy):
                metric.update(output, batch["y"])
            else:
                metric.update(predictions, batch["y"])
        return predictions

    def counted(self, batch: dict[str, Tensor]) -> Tensor | int:
        """What the epoch's loss is a mean over: the samples, or the counted steps."""
        if self.every_step:
            return counted_steps(batch)
        return batch["y"].shape[0]

    def _step(self, batch: dict[str, Tensor], split: str) -> tuple[Tensor, Tensor]:
        output = self(batch["x"], batch.get("lengths"))
        loss = self.loss(output, batch["y"], batch.get("mask"))
        # Only on-device updates per step: Lightning's self.log costs milliseconds a call, as
        # much as a whole step of these small models, so values are logged once per epoch.
        predictions = self._update_metrics(split, output, batch)
        self._split_state(split)[1].update(loss.detach(), weight=self.counted(batch))
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
        if self.automatic_optimization:
            self._seed_batch(batch_idx)
            return self._step(batch, "train")[0]
        return self._manual_steps(batch, batch_idx)

    def _seed_batch(self, batch_in_epoch: int) -> None:
        if self.batch_seed is not None:
            seed_batch(self.batch_seed, self.current_epoch, batch_in_epoch, self.device)

    def _manual_steps(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Train on each batch of the call in turn (each chunk of it, with truncated BPTT).
        Returns every batch's loss, detached, for the divergence guard; the metrics take the
        whole call in one update."""
        optimize = self._step_function()
        parts = self._split_call(batch)
        first_batch = batches_trained(self.trainer, batch_idx) - len(parts)
        outputs, losses, weights = [], [], []
        for index, part in enumerate(parts):
            self._seed_batch(first_batch + index)
            if self.tbptt_steps is not None:
                output, loss = tbptt.train_in_chunks(
                    self.net, part, self.tbptt_steps, self.loss, optimize
                )
            else:
                output = self(part["x"], part.get("lengths"))
                loss = self.loss(output, part["y"], part.get("mask"))
                optimize(loss)
                output, loss = output.detach(), loss.detach()
            outputs.append(output)
            losses.append(loss)
            weights.append(torch.as_tensor(self.counted(part), dtype=torch.float32))
        self._update_metrics("train", torch.cat(outputs), batch)
        loss_values = torch.stack(losses)
        self.train_loss.update(loss_values, weight=torch.stack(weights).to(loss_values.device))
        return loss_values

    def on_train_start(self) -> None:
        wrapped = optimizer_steps.needs_lightning_wrappers(self.trainer, self, SequenceModule)
        self._direct_steps = not wrapped

    def _step_function(self) -> optimizer_steps.Step:
        optimizer = self.optimizers()
        if not isinstance(optimizer, LightningOptimizer):
            raise TypeError(f"{type(self).__name__} trains with one optimizer")
        if self._direct_steps:
            return optimizer_steps.direct_step(self, optimizer)
        return optimizer_steps.lightning_step(self, optimizer)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Lightning clips only for automatic optimization. Here, inside optimizer.step(), the
        # gradients are already unscaled under 16-mixed, which a clip before step() would miss.
        if not self.automatic_optimization and self.gradient_clip_val:
            self.clip_gradients(optimizer, self.gradient_clip_val, self.gradient_clip_algorithm)

    def _split_call(self, batch: dict[str, Tensor]) -> list[dict[str, Tensor]]:
        if self.steps_per_call == 1 or self.batch_size is None:
            return [batch]
        size = per_rank_batch_size(self.batch_size, self.trainer.world_size)
        parts = {name: tensor.split(size) for name, tensor in batch.items()}
        return [
            dict(zip(parts, tensors, strict=True)) for tensors in zip(*parts.values(), strict=True)
        ]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        _, predictions = self._step(batch, "test")
        if self.test_confusion is not None:
            self.test_confusion.update(predictions, batch["y"])

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")
        if not self.automatic_optimization:
            self._step_scheduler()

    def _step_scheduler(self) -> None:
        """What Lightning does for automatic optimization: the epoch's scheduler step, by the
        monitored metric for a plateau scheduler (validation has run by now)."""
        scheduler = self.lr_schedulers()
        if scheduler is None:
            return
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            value = self.trainer.callback_metrics.get(self.monitor)
            if value is not None:
                scheduler.step(value)
        else:
            scheduler.step()

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
        config: dict[str, Any] = {"scheduler": scheduler, "interval": "epoch"}
        if self.automatic_optimization:
            # Lightning steps it and reads this; manual optimization steps it itself
            # (_step_scheduler), and Lightning warns about a key it ignores.
            config["monitor"] = self.monitor
        return {"optimizer": optimizer, "lr_scheduler": config}

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
