"""The optimizer step of a module that optimizes manually, with or without Lightning's wrappers.

`manual_backward` and `LightningOptimizer.step` run the precision plugin and call every
callback's `on_before_backward`, `on_after_backward` and `on_before_optimizer_step` hook,
each inside a profiler context. For these small models that is 5-10 % of a training step
(`python -m benchmarks.epoch_time`). Where nothing needs them (one device, full precision, no
callback or module subclass with those hooks), a step calls torch directly: the same
zero_grad, backward, clipping and optimizer step, in the same order, so the same numbers. It
still counts the step, so `trainer.global_step`, checkpoints and resumes see every one.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor

STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
# The hooks a subclass of the module could add to a step; the module's own
# on_before_optimizer_step only clips, which the direct step does itself.
MODULE_STEP_HOOKS = (*STEP_HOOKS, "backward")

Step = Callable[[Tensor], None]


def needs_lightning_wrappers(trainer: L.Trainer, module: L.LightningModule, base: type) -> bool:
    """Whether a step must go through Lightning: another strategy than one device (DDP's
    backward prepares the gradient sync), mixed or double precision (scaling, autocast), or a
    hook that a callback, or a subclass of `base`, adds to the step."""
    if type(trainer.strategy) is not SingleDeviceStrategy:
        return True
    if type(trainer.precision_plugin) is not Precision:
        return True
    for callback in trainer.callbacks:
        if any(is_overridden(hook, callback, L.Callback) for hook in STEP_HOOKS):
            return True
    return any(is_overridden(hook, module, base) for hook in MODULE_STEP_HOOKS)


def lightning_step(module: L.LightningModule, optimizer: LightningOptimizer) -> Step:
    def step(loss: Tensor) -> None:
        optimizer.zero_grad()
        module.manual_backward(loss)
        optimizer.step()  # clips first: the module's on_before_optimizer_step

    return step


def direct_step(
    module: L.LightningModule,
    optimizer: LightningOptimizer,
    clip_val: float | None,
    clip_algorithm: str,
) -> Step:
    raw = optimizer.optimizer

    def step(loss: Tensor) -> None:
        raw.zero_grad()
        loss.backward()
        if clip_val:
            module.clip_gradients(raw, clip_val, clip_algorithm)
        # What LightningOptimizer.step does around the step: the manual loop counts it
        # (global_step) and opens the profiler's "optimizer_step" section.
        optimizer._on_before_step()
        raw.step()
        optimizer._on_after_step()

    return step
