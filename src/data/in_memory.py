"""Batches sliced from tensors already in memory (or on the GPU), one index tensor per batch.

The datasets of this project fit in memory many times over, so a per-sample Dataset collated by
DataLoader workers would spend most of an epoch on Python overhead. Here a sampler yields whole
index tensors, the dataset answers each with one slice per tensor, and every rank of a
distributed run reads its own shard.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from src.config.errors import ConfigError


def check_batch_size(batch_size: int, world_size: int) -> None:
    if batch_size % world_size:
        raise ConfigError(
            f"data.batch_size={batch_size} is the global batch of all {world_size} processes and "
            f"must divide by {world_size}: use a multiple of {world_size}, or change "
            "trainer.devices / trainer.num_nodes."
        )


def per_rank_batch_size(batch_size: int, world_size: int) -> int:
    """`data.batch_size` is global: each of the `world_size` ranks takes its share."""
    check_batch_size(batch_size, world_size)
    return batch_size // world_size


class TensorBatchSampler(Sampler[Tensor]):
    """Index batches over `num_samples` items, shuffled by `seed + epoch`, sharded by rank.

    With `even_shards` (training under DDP) every rank gets the same number of batches, which the
    gradient all-reduce needs; the few samples cut off change from epoch to epoch. Without it
    (evaluation) the shards partition the split exactly, so every sample is seen once.

    `batches_per_yield` > 1 yields that many consecutive batches as one index tensor, which the
    module splits again (`steps_per_call`): the batches are the same ones, in the same order.
    `max_batches` ends every epoch after that many batches (`trainer.limit_train_batches`).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        even_shards: bool = False,
        device: torch.device | None = None,
        batches_per_yield: int = 1,
        max_batches: int | None = None,
    ) -> None:
        self.num_samples = num_samples
        # Index batches live where the data does: indexing GPU tensors with a CPU index would
        # copy it over, and wait for the copy, on every step.
        self.device = device
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.even_shards = even_shards
        self.batches_per_yield = batches_per_yield
        self.max_batches = max_batches
        self.epoch = 0
        self._resume_at: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        # Lightning calls this before every epoch, also after a resume, so the order is a pure
        # function of (seed, epoch) and a resumed run sees the batches an uninterrupted one would.
        self.epoch = epoch

    def _shard(self) -> Tensor:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.arange(self.num_samples)
        shard = order[self.rank :: self.world_size]
        if self.even_shards:
            shard = shard[: self.num_samples // self.world_size]
        return shard if self.device is None else shard.to(self.device)

    def resume_within_epoch(self, epoch: int, batches_done: int) -> None:
        """Skip the `batches_done` first batches of `epoch`, once: where an interrupted run
        stopped. Any other epoch is served whole."""
        self._resume_at = (epoch, batches_done)

    def __iter__(self) -> Iterator[Tensor]:
        shard = self._shard()[: self.num_batches * self.batch_size]
        if self._resume_at is not None:
            epoch, batches_done = self._resume_at
            self._resume_at = None
            if epoch == self.epoch:
                shard = shard[batches_done * self.batch_size :]
        return iter(shard.split(self.batch_size * self.batches_per_yield))

    @property
    def num_batches(self) -> int:
        """Batches in an epoch (of `batch_size`, the last one possibly short)."""
        if self.even_shards:
            shard_size = self.num_samples // self.world_size
        else:
            shard_size = len(range(self.rank, self.num_samples, self.world_size))
        batches = -(-shard_size // self.batch_size)
        return batches if self.max_batches is None else min(batches, self.max_batches)

    def __len__(self) -> int:
        return -(-self.num_batches // self.batches_per_yield)


class TensorDictDataset(Dataset[dict[str, Tensor]]):
    """Named tensors of equal length; indexing with an index tensor returns a whole batch."""

    def __init__(self, **tensors: Tensor) -> None:
        lengths = {name: len(tensor) for name, tensor in tensors.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"tensors differ in length: {lengths}")
        self.tensors = tensors

    def __getitem__(self, index: Tensor) -> dict[str, Tensor]:
        return {name: tensor[index] for name, tensor in self.tensors.items()}

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    @property
    def device(self) -> torch.device:
        return next(iter(self.tensors.values())).device

    def to(self, device: torch.device) -> TensorDictDataset:
        return TensorDictDataset(**{name: t.to(device) for name, t in self.tensors.items()})


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of an epoch's training draw: its own stream, never the fixed sets' (`seed`)."""
    return int(np.random.SeedSequence([seed, 1, epoch]).generate_state(1, np.uint64)[0])


class OnlineDataset(TensorDictDataset):
    """A training split drawn afresh for every epoch by `draw(epoch)`, a pure function of the
    epoch: a resumed run draws the very sequences an uninterrupted one would."""

    def __init__(
        self, draw: Callable[[int], dict[str, Tensor]], device: torch.device | None = None
    ) -> None:
        self.draw = draw
        self.epoch = 0
        super().__init__(**self._drawn(0, device))

    def _drawn(self, epoch: int, device: torch.device | None) -> dict[str, Tensor]:
        tensors = self.draw(epoch)
        return {name: t.to(device) if device is not None else t for name, t in tensors.items()}

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.tensors = self._drawn(epoch, self.device)
            self.epoch = epoch

    def to(self, device: torch.device) -> OnlineDataset:
        moved = OnlineDataset.__new__(OnlineDataset)
        moved.draw, moved.epoch = self.draw, self.epoch
        moved.tensors = {name: t.to(device) for name, t in self.tensors.items()}
        return moved


def batch_loader(
    dataset: TensorDictDataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    batches_per_yield: int = 1,
    max_batches: int | None = None,
) -> DataLoader:
    """A DataLoader of slices of `dataset`; training loaders shuffle and shard evenly."""
    sampler = TensorBatchSampler(
        len(dataset),
        batch_size,
        shuffle=shuffle,
        seed=seed,
        rank=rank,
        world_size=world_size,
        even_shards=shuffle,
        device=dataset.device,
        batches_per_yield=batches_per_yield,
        max_batches=max_batches,
    )
    # batch_size=None: the sampler already yields whole batches, so nothing is collated.
    return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=0)


def batch_limit(limit: int | float | None, num_batches: int) -> int | None:
    """Lightning's reading of `limit_train_batches`: a count, or a fraction of the epoch."""
    if limit is None or (isinstance(limit, float) and limit == 1.0):
        return None
    if limit < 0 or (isinstance(limit, float) and limit > 1.0 and not limit.is_integer()):
        raise ConfigError(
            f"trainer.limit_train_batches={limit} is neither a fraction of the epoch in [0, 1] "
            "nor a whole number of batches. Fix: trainer.limit_train_batches=0.5, or =8."
        )
    if isinstance(limit, float) and limit < 1.0:
        return int(num_batches * limit)
    return min(int(limit), num_batches)  # a whole float (8.0) counts batches, as in Lightning


@dataclass
class EpochPosition:
    """How far training got: the epoch, and how many of its batches were trained on."""

    epoch: int = 0
    batches_done: int = 0

    def count_batches(self, epoch: int, batches: int = 1) -> None:
        self.batches_done = self.batches_done + batches if epoch == self.epoch else batches
        self.epoch = epoch


def batches_trained(trainer: L.Trainer, batch_idx: int) -> int:
    """Training batches done in this epoch so far, the current call included. Lightning's
    `batch_idx` counts its calls of training_step, which take `steps_per_call` batches each;
    seqlab's DataModules keep the place in batches (a resumed run's included)."""
    position = getattr(trainer.datamodule, "position", None)
    if position is not None and position.epoch == trainer.current_epoch:
        return int(position.batches_done)
    return batch_idx + 1


class ResumableLoader(DataLoader):
    """A training loader whose place in the epoch goes into checkpoints (Lightning saves the
    `state_dict` of any loader that has one), so a run stopped mid-epoch resumes with the batch
    after the last one it trained on, not with the epoch's first."""

    def __init__(self, loader: DataLoader, position: EpochPosition) -> None:
        super().__init__(loader.dataset, sampler=loader.sampler, batch_size=None, num_workers=0)
        self.position = position

    def __iter__(self) -> Any:
        # Lightning has set the sampler's epoch by now, also in a resumed fit.
        if isinstance(self.dataset, OnlineDataset):
            self.dataset.set_epoch(self.sampler.epoch)
        return super().__iter__()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.position.epoch, "batches_done": self.position.batches_done}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.position.epoch = state_dict["epoch"]
        self.position.batches_done = state_dict["batches_done"]
        self.sampler.resume_within_epoch(self.position.epoch, self.position.batches_done)


class InMemoryDataModule(L.LightningDataModule):
    """A DataModule whose splits are tensors in memory, moved once to the training device.

    Subclasses build the splits; this class serves them as sharded, seeded index batches.
    `batch_size` is global: under DDP each of the ranks takes `batch_size / world_size`.
    Keys of the data config that describe the task for the model side (name, task, sizes,
    tolerance, monitor) arrive in `task_info` and are kept only for reference.
    """

    def __init__(
        self,
        *,
        batch_size: int,
        shuffle_seed: int = 0,
        steps_per_call: int = 1,
        train_batch_limit: int | float | None = None,
        **task_info: object,
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.shuffle_seed = shuffle_seed
        # Training batches go to the module `steps_per_call` at a time (it steps through them),
        # and an epoch ends after `train_batch_limit` of them (Lightning's limit_train_batches:
        # Lightning itself would count the groups).
        self.steps_per_call = steps_per_call
        self.train_batch_limit = train_batch_limit
        self.task_info = task_info
        self.splits: dict[str, TensorDictDataset] = {}
        self.position = EpochPosition()

    def build_splits(self) -> dict[str, TensorDictDataset]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        splits = self.build_splits()
        if self.trainer is not None:
            device = self.trainer.strategy.root_device
            splits = {name: dataset.to(device) for name, dataset in splits.items()}
        self.splits = splits

    def _loader(self, split: str, *, shuffle: bool) -> DataLoader:
        rank, world_size = 0, 1
        if self.trainer is not None:
            rank, world_size = self.trainer.global_rank, self.trainer.world_size
        batch_size = per_rank_batch_size(self.batch_size, world_size)
        if self.trainer is not None and self.trainer.overfit_batches:
            # Lightning swaps any sampler but a SequentialSampler for one that yields single
            # indices, which would unbatch ours: the same first batches via plain collation.
            return DataLoader(self.splits[split], batch_size=batch_size, shuffle=False)
        training = split == "train"
        loader = batch_loader(
            self.splits[split],
            batch_size,
            shuffle=shuffle,
            seed=self.shuffle_seed,
            rank=rank,
            world_size=world_size,
            batches_per_yield=self.steps_per_call if training else 1,
        )
        if training:
            sampler = loader.sampler
            sampler.max_batches = batch_limit(self.train_batch_limit, sampler.num_batches)
        return loader

    def train_dataloader(self) -> DataLoader:
        loader = self._loader("train", shuffle=True)
        if isinstance(loader.sampler, TensorBatchSampler) and self.trainer is not None:
            # A resumed fit draws its first batches before Lightning calls set_epoch: start the
            # sampler at the epoch about to be trained (0 in a fresh fit).
            loader.sampler.set_epoch(self.trainer.fit_loop.epoch_progress.current.processed)
            return ResumableLoader(loader, self.position)
        return loader

    def on_after_batch_transfer(self, batch: dict[str, Tensor], dataloader_idx: int) -> Any:
        # Counted here, as the batches reach the training step: the loader itself runs a call
        # ahead (Lightning prefetches one to know which is last). The place is kept in batches,
        # whatever steps_per_call groups them into.
        if self.trainer is not None and self.trainer.training:
            batch_size = per_rank_batch_size(self.batch_size, self.trainer.world_size)
            batches = -(-len(batch["x"]) // batch_size)
            self.position.count_batches(self.trainer.current_epoch, batches)
        return batch

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
