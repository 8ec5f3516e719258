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


def train_epochs(cfg: DictConfig, epochs: int, device: torch.device) -> tuple[list[float], int]:
    if cfg.get("num_threads"):
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    data = training_tensors(cfg, device)
    model = instantiate(network_config(cfg.model)).to(device)
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    loss_fn = F.mse_loss if cfg.data.task == "regression" else F.cross_entropy
    x, y, lengths = data["x"], data["y"], data.get("lengths")
    generator = torch.Generator().manual_seed(cfg.seed)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(x), generator=generator).to(device)
        for index in order.split(cfg.data.batch_size):
            output = model(x[index], None if lengths is None else lengths[index])
            loss = loss_fn(output, y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return seconds, len(x)


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
