"""A run's test-split predictions from its best checkpoint alone: weights and run config."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from src.inference import predict_split
from src.restore import restore_checkpoint


def test_predictions(checkpoint: Path) -> tuple[Tensor, Tensor]:
    """(model outputs, targets) on the test split of the run that saved `checkpoint`."""
    run = restore_checkpoint(checkpoint)
    test = predict_split(run.module, run.datamodule, "test")
    return test.outputs, test.targets
