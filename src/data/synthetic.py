"""What the generated tasks share: seeded draws, train/val/test sets, the online regime, caching.

A task subclasses `SyntheticDataModule` with one method, `generate(num_sequences, seed)`, which
returns named tensors (`x`, `y`, and where the task needs them `lengths`, `mask`, `key_mask`).
Generators are vectorised over sequences and seeded with NumPy's PCG64, so the same seed gives
the same bytes on any machine, offline.

- `regime=fixed` (the default): one set of `num_train + num_val + num_test` sequences, drawn
  from `seed`, split in that order; with a `cache_file` it is written there once (DVC caches it).
- `regime=online`: validation and test stay those fixed sets; the training sequences are drawn
  afresh every epoch, from a seed derived from (`seed`, epoch), so a resumed run draws the same
  ones. This is the 1997 paper's regime: its nets saw a new sequence at every step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from src.config.checks import REGIMES
from src.data.in_memory import InMemoryDataModule, OnlineDataset, TensorDictDataset, epoch_seed
from src.data.tensor_cache import load_cache, save_cache

SPLITS = ("train", "val", "test")


def rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def one_hot(symbols: np.ndarray, num_symbols: int, valid: np.ndarray | None = None) -> Tensor:
    """[N, T] integer symbols as float32 one-hot vectors [N, T, num_symbols]; zero where not
    `valid` (after a sequence's end)."""
    encoded = np.eye(num_symbols, dtype=np.float32)[symbols]
    if valid is not None:
        encoded *= valid[..., None]
    return torch.from_numpy(encoded)


def mark_two_1997(
    generator: np.random.Generator, num_sequences: int, seq_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """The 1997 paper's two marked steps (experiments 4 and 5): the first among the first ten
    steps, the second among the first T/2 - 1 steps still unmarked."""
    first = generator.integers(0, 10, num_sequences)
    rank = generator.integers(0, seq_len // 2 - 1, num_sequences)
    # The rank-th unmarked step: steps from `first` on shift by one.
    second = rank + (rank >= first)
    return first, second


def lengths_1997(generator: np.random.Generator, num_sequences: int, seq_len: int) -> np.ndarray:
    """Lengths drawn uniformly from [T, T + T/10], as the paper's experiments 4 to 6 do."""
    return generator.integers(seq_len, seq_len + seq_len // 10 + 1, num_sequences)


class SyntheticDataModule(InMemoryDataModule):
    def __init__(
        self,
        *,
        num_train: int,
        num_val: int,
        num_test: int,
        seed: int,
        regime: str = "fixed",
        cache_file: str | Path | None = None,
        batch_size: int = 32,
        shuffle_seed: int = 0,
        **task_info: object,
    ) -> None:
        super().__init__(batch_size=batch_size, shuffle_seed=shuffle_seed, **task_info)
        if regime not in REGIMES:
            raise ValueError(f"unknown regime {regime!r}; available: {', '.join(REGIMES)}")
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.seed = seed
        self.regime = regime
        self.cache_file = cache_file

    def generate(self, num_sequences: int, seed: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def generation_params(self) -> dict[str, Any]:
        """Everything the fixed sets depend on besides sizes and seed (the cache's key)."""
        return {}

    def fixed_sets(self) -> dict[str, dict[str, Tensor]]:
        """The fixed train, val and test sets: consecutive slices of one draw from `seed`."""
        drawn = self.generate(sum(self.sizes.values()), self.seed)
        sets, start = {}, 0
        for split in SPLITS:
            rows = slice(start, start + self.sizes[split])
            sets[split] = {name: tensor[rows] for name, tensor in drawn.items()}
            start = rows.stop
        return sets

    def _cached_sets(self) -> dict[str, dict[str, Tensor]]:
        key = {
            "task": type(self).__name__,
            **self.generation_params(),
            **self.sizes,
            "seed": self.seed,
        }
        if self.cache_file is None:
            return self.fixed_sets()
        path = Path(self.cache_file)
        cached = load_cache(path, key, rebuild="regenerating it")
        if cached is not None:
            sets: dict[str, dict[str, Tensor]] = {split: {} for split in SPLITS}
            for name, tensor in cached.items():
                split, _, field = name.partition("/")
                if split in sets:
                    sets[split][field] = tensor
            if all(sets.values()):
                return sets
        sets = self.fixed_sets()
        flat = {
            f"{split}/{name}": t for split, fields in sets.items() for name, t in fields.items()
        }
        save_cache(path, key, flat)
        return sets

    def prepare_data(self) -> None:
        self._cached_sets()

    def build_splits(self) -> dict[str, TensorDictDataset]:
        sets = self._cached_sets()
        splits: dict[str, TensorDictDataset] = {
            split: TensorDictDataset(**fields) for split, fields in sets.items()
        }
        if self.regime == "online":
            splits["train"] = OnlineDataset(self.draw_training_epoch)
        return splits

    def draw_training_epoch(self, epoch: int) -> dict[str, Tensor]:
        return self.generate(self.sizes["train"], epoch_seed(self.seed, epoch))


def padded_steps(lengths: np.ndarray) -> np.ndarray:
    """[N, max(lengths)] whether each step lies within its sequence."""
    return np.arange(int(lengths.max()))[None, :] < lengths[:, None]


def as_tensors(**arrays: np.ndarray) -> dict[str, Tensor]:
    return {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in arrays.items()}
