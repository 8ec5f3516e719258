"""Sequential MNIST: each 28x28 digit read as a sequence and classified into 10 classes.

Modes: `row` (28 steps of 28 pixels), `pixel` (784 steps of 1 pixel) and `permuted` (784 steps
in a fixed, seeded random order). `prepare_data` fetches and verifies the four IDX files
(src/data/mnist_files.py) and caches them as uint8/int64 tensors under `data_dir/mnist`; batches
stay uint8 until they reach the device, where they are scaled to [0, 1] and laid out per mode.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from src.data.idx import load_images, load_labels
from src.data.in_memory import InMemoryDataModule, TensorDictDataset
from src.data.mnist_files import MNIST_SHA256, fetch_mnist

log = logging.getLogger(__name__)

MODES = ("row", "pixel", "permuted")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def prepare_cache(raw: dict[str, Path], cache_path: Path) -> None:
    """Write images and labels as tensors, keyed by the raw files' digests; rebuilt on change."""
    sources = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in raw.items()}
    if cache_path.exists():
        cached = torch.load(cache_path, weights_only=True)
        if cached.get("sources") == sources:
            return
        log.info("MNIST files changed since %s was written; rebuilding it", cache_path)
    tensors: dict[str, Any] = {"sources": sources}
    for split, (images, labels) in FILES.items():
        tensors[f"{split}_images"] = torch.from_numpy(load_images(raw[images]))
        tensors[f"{split}_labels"] = torch.from_numpy(load_labels(raw[labels]))
    tmp = cache_path.with_suffix(f".tmp{os.getpid()}")
    torch.save(tensors, tmp)
    os.replace(tmp, cache_path)


def pixel_permutation(seed: int) -> Tensor:
    return torch.randperm(28 * 28, generator=torch.Generator().manual_seed(seed))


class MNISTDataModule(InMemoryDataModule):
    def __init__(
        self,
        *,
        mode: str = "row",
        val_size: int = 5000,
        val_split: str = "first",
        split_seed: int = 0,
        permutation_seed: int = 0,
        train_subset: int | None = None,
        data_dir: str | Path = "data",
        mirrors: Sequence[str] = (),
        local_mirror: str | None = None,
        checksums: Mapping[str, str] | None = None,
        batch_size: int = 128,
        shuffle_seed: int = 0,
        **task_info: object,
    ) -> None:
        super().__init__(batch_size=batch_size, shuffle_seed=shuffle_seed, **task_info)
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; available: {', '.join(MODES)}")
        self.mode = mode
        self.val_size = val_size
        self.val_split = val_split
        self.split_seed = split_seed
        self.train_subset = train_subset
        self.root = Path(data_dir) / "mnist"
        self.mirrors = list(mirrors)
        self.local_mirror = local_mirror
        # Tests pass the digests of their small generated files; real runs use MNIST's.
        self.checksums = dict(checksums or MNIST_SHA256)
        self.permutation = pixel_permutation(permutation_seed) if mode == "permuted" else None

    @property
    def cache_path(self) -> Path:
        return self.root / "mnist.pt"

    def prepare_data(self) -> None:
        raw = fetch_mnist(
            self.root / "raw",
            self.mirrors,
            local_mirror=self.local_mirror,
            checksums=self.checksums,
        )
        prepare_cache(raw, self.cache_path)

    def build_splits(self) -> dict[str, TensorDictDataset]:
        data = torch.load(self.cache_path, weights_only=True)
        images, labels = data["train_images"], data["train_labels"]
        if self.val_split == "first":
            order = torch.arange(len(labels))
        else:
            generator = torch.Generator().manual_seed(self.split_seed)
            order = torch.randperm(len(labels), generator=generator)
        val_rows, train_rows = order[: self.val_size], order[self.val_size :]
        if self.train_subset is not None:
            train_rows = train_rows[: self.train_subset]
        return {
            "train": TensorDictDataset(x=images[train_rows], y=labels[train_rows]),
            "val": TensorDictDataset(x=images[val_rows], y=labels[val_rows]),
            "test": TensorDictDataset(x=data["test_images"], y=data["test_labels"]),
        }

    def on_after_batch_transfer(self, batch: dict[str, Tensor], dataloader_idx: int) -> Any:
        batch["x"] = as_sequence(batch["x"], self.mode, self.permutation)
        return batch


def as_sequence(images: Tensor, mode: str, permutation: Tensor | None = None) -> Tensor:
    """uint8 [B, 28, 28] -> float [B, steps, features] in [0, 1]."""
    x = images.float().div_(255.0)
    if mode == "row":
        return x
    x = x.reshape(len(x), 28 * 28)
    if permutation is not None:
        x = x[:, permutation.to(x.device)]
    return x.unsqueeze(-1)
