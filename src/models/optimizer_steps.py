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
# What a subclass of the module could add to a step. The module's own on_before_optimizer_step
# (it clips) is called by the direct step too.
MODULE_STEP_HOOKS = (*STEP_HOOKS, "backward", "manual_backward")

Step = Callable[[Tensor], None]


def _hooked(obj: object, base: type, hooks: tuple[str, ...]) -> bool:
    for hook in hooks:
        try:
            if is_overridden(hook, obj, base):
                return True
        except AttributeError:  # a hook set on the instance that is not a Python function
            return True
    return False


def needs_lightning_wrappers(trainer: L.Trainer, module: L.LightningModule, base: type) -> bool:
    """Whether a step must go through Lightning: another strategy than one device (DDP's
    backward prepares the gradient sync), mixed or double precision (scaling, autocast), or a
    hook that a callback, or a subclass of `base`, adds to the step."""
    if type(trainer.strategy) is not SingleDeviceStrategy:
        return True
    if type(trainer.precision_plugin) is not Precision:
        return True
    if any(_hooked(callback, L.Callback, STEP_HOOKS) for callback in trainer.callbacks):
        return True
    return _hooked(module, base, MODULE_STEP_HOOKS)


def lightning_step(module: L.LightningModule, optimizer: LightningOptimizer) -> Step:
    def step(loss: Tensor) -> None:
        optimizer.zero_grad()
        module.manual_backward(loss)
        optimizer.step()  # clips first: the module's on_before_optimizer_step

    return step


def direct_step(module: L.LightningModule, optimizer: LightningOptimizer) -> Step:
    raw = optimizer.optimizer

    def step(loss: Tensor) -> None:
        raw.zero_grad()
        loss.backward()
        # What LightningOptimizer.step does around the step: the manual loop counts it
        # (global_step) and opens the profiler's "optimizer_step" section, inside which
        # Lightning calls the module's hook. Clipping there, before step(), is right only
        # because no gradient scaler runs here (full precision; see needs_lightning_wrappers).
        optimizer._on_before_step()
        module.on_before_optimizer_step(raw)
        raw.step()
        optimizer._on_after_step()

    return step
