"""The reference side of the epoch-time benchmark: the same work as `python -m src.train`, in
plain PyTorch.

Same composed config, model, initialisation, optimiser, batch size and training data; the data
sits in memory as ready float tensors (on the device), one shuffled index per epoch, no
validation, no logging, no framework. Prints one JSON line: the seconds of
each epoch and the number of training samples.

    python -m benchmarks.plain_loop --epochs 4 model=gru data=multiply
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from src.data.mnist import as_sequence
from src.models.sequence_model import network_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def training_tensors(cfg: DictConfig, device: torch.device) -> dict[str, torch.Tensor]:
    datamodule = instantiate(cfg.data, shuffle_seed=cfg.seed)
    datamodule.prepare_data()
    tensors = dict(datamodule.build_splits()["train"].tensors)
    if cfg.data.name == "mnist":
        tensors["x"] = as_sequence(tensors["x"], cfg.data.mode, datamodule.permutation)
    return {name: tensor.to(device) for name, tensor in tensors.items()}


class PlainLoop:
    """The model, optimizer and training data of a composed config, trained an epoch at a time."""

    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        if cfg.get("num_threads"):
            torch.set_num_threads(cfg.num_threads)
        torch.manual_seed(cfg.seed)
        self.device = device
        self.batch_size = int(cfg.data.batch_size)
        self.data = training_tensors(cfg, device)
        self.model = instantiate(network_config(cfg.model)).to(device)
        self.optimizer = instantiate(cfg.optimizer)(self.model.parameters())
        self.loss_fn = F.mse_loss if cfg.data.task == "regression" else F.cross_entropy
        self.generator = torch.Generator().manual_seed(cfg.seed)

    @property
    def num_samples(self) -> int:
        return len(self.data["x"])

    def epoch(self) -> float:
        """Train one epoch; return its seconds."""
        x, y, lengths = self.data["x"], self.data["y"], self.data.get("lengths")
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        order = torch.randperm(len(x), generator=self.generator).to(self.device)
        for index in order.split(self.batch_size):
            output = self.model(x[index], None if lengths is None else lengths[index])
            loss = self.loss_fn(output, y[index])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start


def train_epochs(cfg: DictConfig, epochs: int, device: torch.device) -> tuple[list[float], int]:
    loop = PlainLoop(cfg, device)
    return [loop.epoch() for _ in range(epochs)], loop.num_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for src.train")
    args = parser.parse_args()
    device = torch.device(args.device)
    seconds, num_samples = train_epochs(compose_config(args.overrides), args.epochs, device)
    print(json.dumps({"epoch_seconds": seconds, "num_samples": num_samples}))


if __name__ == "__main__":
    main()
