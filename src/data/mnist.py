"""Sequential MNIST: each 28x28 digit read as a sequence and classified into 10 classes.

Modes: `row` (28 steps of 28 pixels), `pixel` (784 steps of 1 pixel) and `permuted` (784 steps
in a fixed, seeded random order). `prepare_data` fetches and verifies the four IDX files
(src/data/mnist_files.py) and caches them as uint8/int64 tensors in `data_dir/mnist/mnist.pt`
(rebuilt from the raw files when they change or the cache is damaged); batches
stay uint8 until they reach the device, where they are scaled to [0, 1] and laid out per mode.

`augment_shift` > 0 trains on digits moved by a random whole-pixel offset, a new one for every
image in every epoch (seeded by the run's seed and the epoch, so a resumed run sees the images an
uninterrupted one would); validation and test images stay as they are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from src.config.checks import MNIST_MODES
from src.data.idx import load_images, load_labels
from src.data.in_memory import InMemoryDataModule, OnlineDataset, TensorDictDataset, epoch_seed
from src.data.mnist_files import MNIST_SHA256, fetch_mnist
from src.data.tensor_cache import load_cache, save_cache

MODES = MNIST_MODES
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CACHED_TENSORS = {f"{split}_{kind}" for split in FILES for kind in ("images", "labels")}
REBUILD = "rebuilding it from the verified MNIST files"


def prepare_cache(raw: dict[str, Path], cache_path: Path) -> dict[str, Tensor]:
    """The images and labels as tensors, from the cache if it is intact and was made from these
    raw files (keyed by their digests), else built from them and cached."""
    sources = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in raw.items()}
    cached = load_cache(cache_path, {"sources": sources}, rebuild=REBUILD)
    if cached is not None and set(cached) == CACHED_TENSORS:
        return cached
    tensors: dict[str, Tensor] = {}
    for split, (images, labels) in FILES.items():
        tensors[f"{split}_images"] = torch.from_numpy(load_images(raw[images]))
        tensors[f"{split}_labels"] = torch.from_numpy(load_labels(raw[labels]))
    save_cache(cache_path, {"sources": sources}, tensors)
    return tensors


def pixel_permutation(seed: int) -> Tensor:
    return torch.randperm(28 * 28, generator=torch.Generator().manual_seed(seed))


def shifted(images: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Each image [N, H, W] moved by its own offset of up to `max_shift` pixels along each axis,
    the pixels moved in filled with 0 (the background)."""
    n, height, width = images.shape
    padded = torch.nn.functional.pad(images, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, n, 1), generator=generator)
    rows = (offsets[0] + torch.arange(height))[:, :, None].expand(n, height, width + 2 * max_shift)
    cols = (offsets[1] + torch.arange(width))[:, None, :].expand(n, height, width)
    return padded.gather(1, rows).gather(2, cols)


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
        augment_shift: int = 0,
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
        self.augment_shift = augment_shift
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
        self._prepare()

    def _prepare(self) -> dict[str, Tensor]:
        raw = fetch_mnist(
            self.root / "raw",
            self.mirrors,
            local_mirror=self.local_mirror,
            checksums=self.checksums,
        )
        return prepare_cache(raw, self.cache_path)

    def _cached(self) -> dict[str, Tensor]:
        """The cache prepare_data wrote; rebuilt (verifying the raw files again) if it has been
        damaged since or is missing. Any key will do: prepare_data has just checked it."""
        data = load_cache(self.cache_path, None, rebuild=REBUILD)
        if data is None or set(data) != CACHED_TENSORS:
            # Known bad (and reported): gone, so _prepare rebuilds it without a second warning.
            self.cache_path.unlink(missing_ok=True)
            return self._prepare()
        return data

    def build_splits(self) -> dict[str, TensorDictDataset]:
        data = self._cached()
        images, labels = data["train_images"], data["train_labels"]
        if self.val_split == "first":
            order = torch.arange(len(labels))
        else:
            generator = torch.Generator().manual_seed(self.split_seed)
            order = torch.randperm(len(labels), generator=generator)
        val_rows, train_rows = order[: self.val_size], order[self.val_size :]
        if self.train_subset is not None:
            train_rows = train_rows[: self.train_subset]
        train = TensorDictDataset(x=images[train_rows], y=labels[train_rows])
        if self.augment_shift:
            train = OnlineDataset(partial(self._shifted_epoch, train.tensors))
        return {
            "train": train,
            "val": TensorDictDataset(x=images[val_rows], y=labels[val_rows]),
            "test": TensorDictDataset(x=data["test_images"], y=data["test_labels"]),
        }

    def _shifted_epoch(self, fixed: dict[str, Tensor], epoch: int) -> dict[str, Tensor]:
        """An epoch's training images, each moved by its own offset (`augment_shift`)."""
        generator = torch.Generator().manual_seed(epoch_seed(self.shuffle_seed, epoch))
        return {"x": shifted(fixed["x"], self.augment_shift, generator), "y": fixed["y"]}

    def on_after_batch_transfer(self, batch: dict[str, Tensor], dataloader_idx: int) -> Any:
        batch = super().on_after_batch_transfer(batch, dataloader_idx)  # counts the batch
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
