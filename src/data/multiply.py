"""The multiplication problem (Hochreiter & Schmidhuber 1997, experiment 5) as a DataModule.

Each sequence is `seq_len` steps of (marker, value) with value ~ U(0, 1); exactly two steps carry
marker 1 and the target is the product of their values. Generation is vectorised and seeded with
NumPy's PCG64, so the same seed gives the same bytes on any machine. With a `cache_file`,
`prepare_data` writes the generated tensors there once (DVC caches that file) and training reads
it; a file made with other parameters, or damaged, is regenerated (src/data/tensor_cache.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from src.config.checks import MULTIPLY_VARIANTS
from src.data.in_memory import InMemoryDataModule, OnlineDataset, TensorDictDataset, epoch_seed
from src.data.synthetic import lengths_1997, mark_two_1997, rng
from src.data.tensor_cache import load_cache, save_cache

VARIANTS = MULTIPLY_VARIANTS


@dataclass(frozen=True)
class MultiplicationData:
    inputs: Tensor  # [N, max_len, 2] float32: (marker, value), zero after each sequence's end
    lengths: Tensor  # [N] int64
    targets: Tensor  # [N, 1] float32


_FIELDS = {f.name for f in fields(MultiplicationData)}


def generate_classic(num_sequences: int, seq_len: int, seed: int) -> MultiplicationData:
    """Fixed-length sequences; the two marked steps are a uniformly drawn pair of distinct steps."""
    generator = rng(seed)
    values = generator.random((num_sequences, seq_len), dtype=np.float32)
    first = generator.integers(0, seq_len, num_sequences)
    # Drawing from seq_len - 1 and skipping `first` makes every distinct pair equally likely.
    second = generator.integers(0, seq_len - 1, num_sequences)
    second += second >= first
    markers = np.zeros((num_sequences, seq_len), dtype=np.float32)
    rows = np.arange(num_sequences)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    targets = values[rows, first] * values[rows, second]
    lengths = np.full(num_sequences, seq_len, dtype=np.int64)
    return _to_tensors(markers, values, lengths, targets)


def generate_paper_1997(num_sequences: int, seq_len: int, seed: int) -> MultiplicationData:
    """The 1997 paper's rules: length in [T, T + T/10], first mark among the first 10 steps,
    the second among the first T/2 - 1 steps still unmarked (src/data/synthetic.py), marker -1
    on the first and last step (a marked first step is marked 1, and its value is 1). Steps
    after a sequence's end are zero and never read."""
    if seq_len < 20:
        raise ValueError(f"the paper_1997 variant needs seq_len >= 20, got {seq_len}")
    generator = rng(seed)
    max_len = seq_len + seq_len // 10
    lengths = lengths_1997(generator, num_sequences, seq_len)
    values = generator.random((num_sequences, max_len), dtype=np.float32)
    first, second = mark_two_1997(generator, num_sequences, seq_len)
    rows = np.arange(num_sequences)
    steps = np.arange(max_len)
    valid = steps[None, :] < lengths[:, None]
    markers = np.zeros((num_sequences, max_len), dtype=np.float32)
    markers[rows, 0] = -1.0
    markers[rows, lengths - 1] = -1.0
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    values *= valid
    # "In the rare case where the first pair of the input sequence gets marked, we set X1 to 1.0."
    values[(first == 0) | (second == 0), 0] = 1.0
    targets = values[rows, first] * values[rows, second]
    return _to_tensors(markers, values, lengths, targets)


def _to_tensors(
    markers: np.ndarray, values: np.ndarray, lengths: np.ndarray, targets: np.ndarray
) -> MultiplicationData:
    inputs = np.stack([markers, values], axis=-1)
    return MultiplicationData(
        inputs=torch.from_numpy(inputs),
        lengths=torch.from_numpy(lengths.astype(np.int64)),
        targets=torch.from_numpy(targets.astype(np.float32)).unsqueeze(-1),
    )


def generate(variant: str, num_sequences: int, seq_len: int, seed: int) -> MultiplicationData:
    if variant == "classic":
        return generate_classic(num_sequences, seq_len, seed)
    if variant == "paper_1997":
        return generate_paper_1997(num_sequences, seq_len, seed)
    raise ValueError(f"unknown variant {variant!r}; available: {', '.join(VARIANTS)}")


def load_or_generate(
    cache_file: str | Path | None, variant: str, num_sequences: int, seq_len: int, seed: int
) -> MultiplicationData:
    """The sequences from `cache_file` if it holds intact ones made with these parameters, else
    generated (the data is deterministic, so a damaged cache is simply made again) and written
    there atomically."""
    params = {"variant": variant, "num_sequences": num_sequences, "seq_len": seq_len, "seed": seed}
    if cache_file is None:
        return generate(**params)
    path = Path(cache_file)
    cached = load_cache(path, params, rebuild="regenerating it")
    if cached is not None and set(cached) == _FIELDS:
        return MultiplicationData(**cached)
    data = generate(**params)
    save_cache(path, params, asdict(data))
    return data


def split_sizes(num_sequences: int, num_fit: int, val_fraction: float) -> tuple[int, int, int]:
    """(train, val, test): the first `num_fit` fit, their last `val_fraction` validate."""
    num_val = round(num_fit * val_fraction)
    return num_fit - num_val, num_val, num_sequences - num_fit


class MultiplicationDataModule(InMemoryDataModule):
    def __init__(
        self,
        *,
        num_sequences: int = 3000,
        seq_len: int = 100,
        num_fit: int = 2560,
        val_fraction: float = 0.2,
        variant: str = "classic",
        seed: int = 1997,
        cache_file: str | Path | None = None,
        regime: str = "fixed",
        batch_size: int = 32,
        shuffle_seed: int = 0,
        **task_info: object,
    ) -> None:
        super().__init__(batch_size=batch_size, shuffle_seed=shuffle_seed, **task_info)
        self.num_sequences = num_sequences
        self.seq_len = seq_len
        self.num_fit = num_fit
        self.val_fraction = val_fraction
        self.variant = variant
        self.seed = seed
        self.cache_file = cache_file
        self.regime = regime

    def _data(self) -> MultiplicationData:
        return load_or_generate(
            self.cache_file, self.variant, self.num_sequences, self.seq_len, self.seed
        )

    def prepare_data(self) -> None:
        self._data()

    def build_splits(self) -> dict[str, TensorDictDataset]:
        data = self._data()
        tensors = {"x": data.inputs, "y": data.targets}
        if self.variant != "classic":
            # Only variable-length sequences need their lengths; without them the model reads
            # the last step directly.
            tensors["lengths"] = data.lengths
        num_train, _, _ = split_sizes(self.num_sequences, self.num_fit, self.val_fraction)
        bounds = {
            "train": slice(0, num_train),
            "val": slice(num_train, self.num_fit),
            "test": slice(self.num_fit, self.num_sequences),
        }
        splits = {
            split: TensorDictDataset(**{name: t[rows] for name, t in tensors.items()})
            for split, rows in bounds.items()
        }
        if self.regime == "online":
            splits["train"] = OnlineDataset(lambda epoch: self._fresh(num_train, epoch))
        return splits

    def _fresh(self, num_train: int, epoch: int) -> dict[str, Tensor]:
        """An epoch's own training sequences (regime=online, src/data/synthetic.py)."""
        data = generate(self.variant, num_train, self.seq_len, epoch_seed(self.seed, epoch))
        tensors = {"x": data.inputs, "y": data.targets}
        if self.variant != "classic":
            tensors["lengths"] = data.lengths
        return tensors
