"""The adding problem (Hochreiter & Schmidhuber 1997, experiment 4) as a DataModule.

Each step is (marker, value), the same layout as the multiplication problem; two steps are
marked with 1 and the target, read at the sequence's end, depends on their values X1 and X2.

- `paper_1997`: values in [-1, 1], lengths in [T, T + T/10]; X1 among the first ten steps, X2
  among the first T/2 - 1 steps still unmarked; marker -1 on the first and the last step; a
  marked first step has its value set to 0. Target 0.5 + (X1 + X2) / 4; correct when the absolute
  error is below 0.04.
- `modern` (the variant of later work, e.g. Le et al. 2015, Arjovsky et al. 2016): values in
  [0, 1], length T, one mark in each half, target X1 + X2. Predicting the mean, 1, scores the
  baseline MSE of 1/6 (about 0.167).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from src.config.checks import ADDING_VARIANTS
from src.data.synthetic import (
    SyntheticDataModule,
    as_tensors,
    lengths_1997,
    mark_two_1997,
    padded_steps,
    rng,
)

BASELINE_MSE_MODERN = 1 / 6  # the variance of X1 + X2 with X1, X2 ~ U(0, 1)


def generate_paper_1997(num_sequences: int, seq_len: int, seed: int) -> dict[str, Tensor]:
    generator = rng(seed)
    lengths = lengths_1997(generator, num_sequences, seq_len)
    valid = padded_steps(lengths)
    values = generator.uniform(-1.0, 1.0, valid.shape).astype(np.float32) * valid
    first, second = mark_two_1997(generator, num_sequences, seq_len)
    rows = np.arange(num_sequences)
    markers = np.zeros(valid.shape, dtype=np.float32)
    markers[rows, 0] = -1.0
    markers[rows, lengths - 1] = -1.0
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    # "In the rare case where the first pair of the sequence gets marked, we set X1 to zero."
    values[(first == 0) | (second == 0), 0] = 0.0
    targets = 0.5 + (values[rows, first] + values[rows, second]) / 4.0
    return as_tensors(
        x=np.stack([markers, values], axis=-1),
        y=targets.astype(np.float32)[:, None],
        lengths=lengths.astype(np.int64),
    )


def generate_modern(num_sequences: int, seq_len: int, seed: int) -> dict[str, Tensor]:
    generator = rng(seed)
    values = generator.random((num_sequences, seq_len), dtype=np.float32)
    half = seq_len // 2
    first = generator.integers(0, half, num_sequences)
    second = generator.integers(half, seq_len, num_sequences)
    rows = np.arange(num_sequences)
    markers = np.zeros_like(values)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    targets = values[rows, first] + values[rows, second]
    return as_tensors(x=np.stack([markers, values], axis=-1), y=targets[:, None])


GENERATORS = {"paper_1997": generate_paper_1997, "modern": generate_modern}
assert tuple(GENERATORS) == ADDING_VARIANTS


class AddingDataModule(SyntheticDataModule):
    def __init__(self, *, seq_len: int = 100, variant: str = "paper_1997", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if variant not in GENERATORS:
            raise ValueError(f"unknown variant {variant!r}; available: {', '.join(GENERATORS)}")
        self.seq_len = seq_len
        self.variant = variant

    def generation_params(self) -> dict[str, Any]:
        return {"variant": self.variant, "seq_len": self.seq_len}

    def generate(self, num_sequences: int, seed: int) -> dict[str, Tensor]:
        return GENERATORS[self.variant](num_sequences, self.seq_len, seed)
