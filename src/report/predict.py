"""A run's test-split predictions from its best checkpoint alone: weights and run config."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor


@torch.no_grad()
def test_predictions(checkpoint: Path) -> tuple[Tensor, Tensor]:
    """(model outputs, targets) on the test split of the run that saved `checkpoint`."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    cfg = OmegaConf.create(saved["seqlab_config"])
    model = instantiate(cfg.model)
    weights = {
        name.removeprefix("net."): value
        for name, value in saved["state_dict"].items()
        if name.startswith("net.")
    }
    model.load_state_dict(weights)
    model.eval()
    datamodule = instantiate(cfg.data, shuffle_seed=cfg.seed)
    datamodule.prepare_data()
    datamodule.setup("test")
    test = datamodule.splits["test"]
    batch = datamodule.on_after_batch_transfer(test[torch.arange(len(test))], 0)
    return model(batch["x"], batch.get("lengths")), batch["y"]
