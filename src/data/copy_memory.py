"""The copy-memory task (Arjovsky, Shah & Bengio 2016), with a fixed lag.

Symbols, one-hot: 0 blank, 1 ... K the categories, K + 1 the delimiter. The input is `to_copy`
symbols drawn from the K categories, T - 1 blanks, the delimiter, then `to_copy` blanks; the
target is T + `to_copy` blanks, then the symbols in their order. Every step has a target. A model
that remembers nothing and outputs blanks, then a uniform guess, scores the cross-entropy
`to_copy * log K / (T + 2 * to_copy)`: 10 log 8 / (T + 20) with the defaults.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import Tensor

from src.data.synthetic import SyntheticDataModule, as_tensors, one_hot, rng

BLANK = 0


def memoryless_cross_entropy(categories: int, to_copy: int, lag: int) -> float:
    return to_copy * math.log(categories) / (lag + 2 * to_copy)


def generate(
    num_sequences: int, lag: int, categories: int, to_copy: int, seed: int
) -> dict[str, Tensor]:
    if categories < 2:
        raise ValueError(f"the copy task needs categories >= 2, got {categories}")
    if lag < 1 or to_copy < 1:
        raise ValueError(f"the copy task needs lag >= 1 and to_copy >= 1, got {lag}, {to_copy}")
    generator = rng(seed)
    length = lag + 2 * to_copy
    symbols = generator.integers(1, categories + 1, (num_sequences, to_copy))
    inputs = np.zeros((num_sequences, length), dtype=np.int64)
    inputs[:, :to_copy] = symbols
    inputs[:, to_copy + lag - 1] = categories + 1
    targets = np.zeros_like(inputs)
    targets[:, -to_copy:] = symbols
    key_mask = np.zeros((num_sequences, length), dtype=bool)
    key_mask[:, -to_copy:] = True
    return {
        "x": one_hot(inputs, categories + 2),
        **as_tensors(y=targets, key_mask=key_mask),
    }


class CopyMemoryDataModule(SyntheticDataModule):
    def __init__(
        self, *, lag: int = 100, categories: int = 8, to_copy: int = 10, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.lag = lag
        self.categories = categories
        self.to_copy = to_copy

    def generation_params(self) -> dict[str, Any]:
        return {"lag": self.lag, "categories": self.categories, "to_copy": self.to_copy}

    def generate(self, num_sequences: int, seed: int) -> dict[str, Tensor]:
        return generate(num_sequences, self.lag, self.categories, self.to_copy, seed)

    @property
    def baseline(self) -> float:
        return memoryless_cross_entropy(self.categories, self.to_copy, self.lag)
