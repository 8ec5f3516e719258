"""The temporal order problem (Hochreiter & Schmidhuber 1997, experiments 6a and 6b).

Symbols, one-hot: a, b, c, d (distractors), X, Y (relevant), E (first), B (last, the trigger).
A sequence starts with E, ends with B, and is otherwise made of random distractors, except at two
(6a) or three (6b) positions, which hold X or Y. The class, read at the end, is the order of
those symbols: XX, XY, YX, YY (6a: Q, R, S, U) or XXX ... YYY (6b: eight classes), counted as a
binary number with X = 0, Y = 1. At T = 100, the paper's setting: lengths in [100, 110], the
positions t1 in [10, 20], t2 in [50, 60] (6a), or t1 in [10, 20], t2 in [33, 43], t3 in
[66, 76] (6b). Other lengths T scale the positions with T.

Correct, by the paper's rule for its outputs: every class probability within 0.3 of the target
(metric probability_error_accuracy); the argmax accuracy is reported beside it (acc).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from src.config.checks import TEMPORAL_ORDER_VARIANTS
from src.data.synthetic import (
    SyntheticDataModule,
    as_tensors,
    lengths_1997,
    one_hot,
    padded_steps,
    rng,
)

SYMBOLS = "abcdXYEB"
X, Y, START, TRIGGER = 4, 5, 6, 7
# The relevant positions as percentages of T, as the paper gives them for T = 100.
WINDOWS = {"6a": ((10, 20), (50, 60)), "6b": ((10, 20), (33, 43), (66, 76))}
assert tuple(WINDOWS) == TEMPORAL_ORDER_VARIANTS
MIN_SEQ_LEN = 10


def num_classes(variant: str) -> int:
    return 2 ** len(WINDOWS[variant])


def generate(variant: str, num_sequences: int, seq_len: int, seed: int) -> dict[str, Tensor]:
    if seq_len < MIN_SEQ_LEN:
        raise ValueError(f"temporal order needs seq_len >= {MIN_SEQ_LEN}, got {seq_len}")
    generator = rng(seed)
    lengths = lengths_1997(generator, num_sequences, seq_len)
    valid = padded_steps(lengths)
    symbols = generator.integers(0, 4, valid.shape)
    rows = np.arange(num_sequences)
    symbols[:, 0] = START
    symbols[rows, lengths - 1] = TRIGGER
    labels = np.zeros(num_sequences, dtype=np.int64)
    for low, high in WINDOWS[variant]:
        position = generator.integers(
            low * seq_len // 100, high * seq_len // 100 + 1, num_sequences
        )
        is_y = generator.integers(0, 2, num_sequences)
        symbols[rows, position] = X + is_y
        labels = labels * 2 + is_y
    return {
        "x": one_hot(symbols, len(SYMBOLS), valid),
        **as_tensors(y=labels, lengths=lengths.astype(np.int64)),
    }


class TemporalOrderDataModule(SyntheticDataModule):
    def __init__(self, *, seq_len: int = 100, variant: str = "6a", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if variant not in WINDOWS:
            raise ValueError(f"unknown variant {variant!r}; available: {', '.join(WINDOWS)}")
        self.seq_len = seq_len
        self.variant = variant

    def generation_params(self) -> dict[str, Any]:
        return {"variant": self.variant, "seq_len": self.seq_len}

    def generate(self, num_sequences: int, seed: int) -> dict[str, Tensor]:
        return generate(self.variant, num_sequences, self.seq_len, seed)
