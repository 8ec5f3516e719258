"""A manual optimizer step calls torch directly where nothing needs Lightning's wrappers, and
trains exactly as the wrapped step does."""

import lightning as L
import pytest
import torch
from torch import nn

from src.models.module import SequenceModule
from src.models.optimizer_steps import needs_lightning_wrappers
from src.training.checkpoints import load_checkpoint
from src.training.run import train
from tests.conftest import QUICK

# Calls of 3 batches of 16, clipped: the module steps the optimizer itself.
MANUAL = [*QUICK, "data.batch_size=16", "steps_per_call=3", "trainer.gradient_clip_val=0.05"]


class RecordsThePath(L.Callback):
    """Adds no hook to a step; records which step the module took."""

    direct: bool | None = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.direct = pl_module._direct_steps


class CountsBackward(RecordsThePath):
    """A user's callback with a hook inside the step: Lightning must call it every step."""

    def __init__(self) -> None:
        self.calls = 0

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.calls += 1


class LogsGradients(SequenceModule):
    def on_before_backward(self, loss: torch.Tensor) -> None:
        pass


class ScalesLoss(SequenceModule):
    def manual_backward(self, loss: torch.Tensor, *args, **kwargs) -> None:
        super().manual_backward(loss * 2, *args, **kwargs)


def module(cls: type[SequenceModule] = SequenceModule) -> SequenceModule:
    return cls(nn.Linear(2, 1), task="regression", optimizer=torch.optim.SGD)


@pytest.mark.parametrize(
    ("trainer_args", "cls", "wrapped"),
    [
        ({}, SequenceModule, False),
        ({"precision": "bf16-mixed"}, SequenceModule, True),
        ({"precision": "64-true"}, SequenceModule, True),
        ({"strategy": "ddp", "devices": 2}, SequenceModule, True),
        ({"callbacks": [CountsBackward()]}, SequenceModule, True),
        ({"callbacks": [RecordsThePath()]}, SequenceModule, False),
        ({}, LogsGradients, True),
        ({}, ScalesLoss, True),
    ],
    ids=[
        "defaults",
        "bf16",
        "float64",
        "ddp",
        "step hook",
        "no step hook",
        "module hook",
        "own manual_backward",
    ],
)
def test_lightnings_wrappers_are_skipped_only_where_nothing_needs_them(trainer_args, cls, wrapped):
    trainer = L.Trainer(accelerator="cpu", logger=False, **trainer_args)
    assert needs_lightning_wrappers(trainer, module(cls), SequenceModule) is wrapped


def last_checkpoint(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "last.ckpt")


@pytest.mark.parametrize("extra", [[], ["model.tbptt_steps=4"]], ids=["clipped", "truncated BPTT"])
def test_direct_steps_train_exactly_as_lightnings(compose_cfg, tmp_path, extra):
    direct, wrapped = RecordsThePath(), CountsBackward()
    for name, callback in (("direct", direct), ("wrapped", wrapped)):
        cfg = compose_cfg(*MANUAL, *extra, f"paths.run_dir={tmp_path / name}")
        train(cfg, extra_callbacks=[callback])
    assert direct.direct is True and wrapped.direct is False
    direct_ckpt, wrapped_ckpt = (last_checkpoint(tmp_path / name) for name in ("direct", "wrapped"))
    # 2 epochs of 8 batches (the quick profile's limit), a step each (truncated BPTT too: one
    # target per sequence, so one chunk with a loss), every one counted.
    assert direct_ckpt["global_step"] == wrapped_ckpt["global_step"] == wrapped.calls == 16
    for name, tensor in wrapped_ckpt["state_dict"].items():
        if name.startswith("net."):
            assert torch.equal(direct_ckpt["state_dict"][name], tensor), name
    # Adam's moments too: the same gradients, clipped alike, went into every step.
    direct_state = direct_ckpt["optimizer_states"][0]["state"]
    for index, state in wrapped_ckpt["optimizer_states"][0]["state"].items():
        for key, tensor in state.items():
            assert torch.equal(direct_state[index][key], tensor), (index, key)


def test_the_direct_step_clips(compose_cfg, tmp_path):
    for name, clip in (("clipped", "0.05"), ("unclipped", "null")):
        cfg = compose_cfg(
            *MANUAL, f"trainer.gradient_clip_val={clip}", f"paths.run_dir={tmp_path / name}"
        )
        train(cfg)
    clipped, unclipped = (last_checkpoint(tmp_path / name) for name in ("clipped", "unclipped"))
    weights = [name for name in clipped["state_dict"] if name.startswith("net.")]
    assert any(
        not torch.equal(clipped["state_dict"][name], unclipped["state_dict"][name])
        for name in weights
    )
