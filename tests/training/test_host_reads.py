"""No training step reads a value back from the device.

On a GPU every such read (`.item()`, `bool(tensor)`, a copy to the CPU, an op whose output size
depends on the data) waits for the device's queue to drain, which stalls the pipeline once per
step. CI has no GPU, so the reads are caught where they start: in Python, by a TorchFunctionMode
that records every call of that kind between the end of one training batch and the end of the
next, on the CPU path, through a real Trainer with every callback seqlab adds.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import pytest
import torch
from omegaconf import open_dict
from torch.overrides import TorchFunctionMode

from src.training.run import train
from tests.conftest import QUICK

# Calls that, on an accelerator, wait for the device.
HOST_READS = {
    "item",
    "tolist",
    "numpy",
    "cpu",
    "__bool__",
    "__int__",
    "__float__",
    "__index__",
    "nonzero",
    "unique",
    "masked_select",
    "bincount",
    "argwhere",
}


# Reads that wait for nothing on any device, by the function that makes them:
HARMLESS = {
    # torch.optim keeps a non-capturable Adam's step count on the host, on every device.
    ("torch/optim/optimizer.py", "_get_value"),
}


class RecordHostReads(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        # `.to("cpu")` names the host. A `.to(device)` with a torch.device (Lightning's batch
        # transfer, gradient clipping) moves to the device the tensors train on: on the CPU path
        # that is the CPU too, so it cannot be told from a read here, and it is not one there.
        to_cpu = name == "to" and any(
            isinstance(a, str) and a == "cpu" for a in [*args[1:], *kwargs.values()]
        )
        if name in HOST_READS or to_cpu:
            caller = sys._getframe(1).f_code
            if not any(
                caller.co_filename.endswith(f) and caller.co_name == fn for f, fn in HARMLESS
            ):
                self.reads.append(f"{name} in {caller.co_name} ({Path(caller.co_filename).name})")
        return func(*args, **kwargs)


class HostReadsBetweenBatches(L.Callback):
    """Records host reads from the end of each training batch to the end of the next (the
    loader's fetch, the step and every callback in between), within an epoch."""

    steps: ClassVar[list[list[str]]] = []

    def __init__(self) -> None:
        self._mode: RecordHostReads | None = None

    def _close(self) -> None:
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            type(self).steps.append(self._mode.reads)
            self._mode = None

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._close()
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        self._mode = RecordHostReads()
        self._mode.__enter__()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close()

    def on_exception(self, *args: Any) -> None:
        self._close()


@pytest.fixture
def recorded_steps() -> list[list[str]]:
    HostReadsBetweenBatches.steps = []
    return HostReadsBetweenBatches.steps


# The recorder goes last, so that it sees the other callbacks' batch ends inside its window.
RECORDER = (
    "+callbacks.zz_host_reads._target_=tests.training.test_host_reads.HostReadsBetweenBatches"
)


MNIST = ["data=mnist", "data.val_size=50", "data.batch_size=16", "model.hidden_size=16"]


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=gru", "steps_per_call=1", *QUICK],
        ["model=gru", "steps_per_call=2", *QUICK],
        [
            "model=lstm",
            "model.implementation=torch",
            "trainer.gradient_clip_val=1.0",
            "steps_per_call=2",
            *QUICK,
        ],
        ["model=rnn", *MNIST, "profile=quick", "optimizer=sgd", "steps_per_call=2"],
    ],
    # One batch per call (Lightning's own optimization) and two (the module's own loop).
    ids=["multiply-gru", "multiply-gru-2-per-call", "multiply-lstm-clipped", "mnist-rnn"],
)
def test_no_training_step_reads_back_from_the_device(
    compose_cfg, fake_mnist, recorded_steps, overrides
):
    mirror, checksums = fake_mnist
    mnist = "data=mnist" in overrides
    cfg = compose_cfg(*overrides, *([f"data.local_mirror={mirror}"] if mnist else []), RECORDER)
    if mnist:
        with open_dict(cfg):
            cfg.data.checksums = checksums
    train(cfg)
    per_call = int(next(o for o in overrides if o.startswith("steps_per_call=")).split("=")[1])
    # At least 2 epochs of 7 batches in calls of `per_call`, less each epoch's last call.
    assert len(recorded_steps) >= 2 * (math.ceil(7 / per_call) - 1)
    reads = sorted({read for step in recorded_steps for read in step})
    assert reads == [], f"a training step reads {reads} back from the device"


def test_the_recorder_sees_reads_back():
    with RecordHostReads() as mode:
        bool(torch.isfinite(torch.tensor(1.0)))
        torch.zeros(3).to("cpu")
        torch.zeros(3).sum().item()
    assert [read.split()[0] for read in mode.reads] == ["__bool__", "to", "item"]
