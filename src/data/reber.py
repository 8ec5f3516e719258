"""The embedded Reber grammar (Hochreiter & Schmidhuber 1997, experiment 1).

A string is B, then T or P, then a string of the Reber grammar (itself B ... E), then the same T
or P again, then E. The net reads the symbols one by one (one-hot, 7 units) and predicts at every
step the set of possible next symbols (multi-label, head=every_step). The paper's rule: a string
is processed correctly when, at every step, the units of the possible next symbols are the most
active ones. The long-lag step is the penultimate symbol, which must repeat the second one across
the whole inner string: its accuracy is reported on its own (key_acc).

As in the paper (after Fahlman), 256 training strings and 256 test strings, none of which is a
training string; the validation strings are drawn the same way.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from src.data.synthetic import SPLITS, SyntheticDataModule, as_tensors, one_hot, rng

SYMBOLS = "BTPSXVE"
B, T, P, S, X, V, E = range(7)
# The Reber grammar's graph: state -> the two (symbol, next state) edges, taken with p = 1/2.
# State 1 follows the initial B; state 6 can only emit the final E.
EDGES = {1: ((T, 2), (P, 3)), 2: ((S, 2), (X, 4)), 3: ((T, 3), (V, 5)), 4: ((X, 3), (S, 6)),
         5: ((P, 4), (V, 6))}  # fmt: skip
DONE = 0


def _edge_table() -> tuple[np.ndarray, np.ndarray]:
    symbol = np.zeros((7, 2), dtype=np.int64)
    following = np.zeros((7, 2), dtype=np.int64)
    for state, edges in EDGES.items():
        for choice, (emitted, nxt) in enumerate(edges):
            symbol[state, choice], following[state, choice] = emitted, nxt
    return symbol, following


def inner_strings(generator: np.random.Generator, num_strings: int) -> list[np.ndarray]:
    """Strings of the (plain) Reber grammar, B ... E, walked for all strings at once."""
    symbol, following = _edge_table()
    state = np.ones(num_strings, dtype=np.int64)
    steps = [np.full(num_strings, B)]
    while (state != DONE).any():
        choice = generator.integers(0, 2, num_strings)
        emitted = np.where(state == 6, E, symbol[state, choice])
        emitted = np.where(state == DONE, -1, emitted)
        state = np.where(state == 6, DONE, following[state, choice])
        state = np.where(emitted == -1, DONE, state)
        steps.append(emitted)
    grid = np.stack(steps, axis=1)
    return [row[row >= 0] for row in grid]


def embedded_strings(generator: np.random.Generator, num_strings: int) -> list[np.ndarray]:
    branch = np.where(generator.integers(0, 2, num_strings) == 0, T, P)
    inner = inner_strings(generator, num_strings)
    return [np.concatenate([[B, b], s, [b, E]]) for b, s in zip(branch, inner, strict=True)]


def next_symbol_sets(string: np.ndarray) -> np.ndarray:
    """[len - 1, 7] multi-hot: after each prefix, the symbols the grammar allows next."""
    symbol, following = _edge_table()
    sets = np.zeros((len(string) - 1, 7), dtype=np.float32)
    sets[0, [T, P]] = 1  # after the first B
    sets[1, B] = 1  # after the branch symbol
    state = 1
    for step in range(2, len(string) - 1):
        if step == len(string) - 3:  # after the inner E: the branch symbol again
            sets[step, string[1]] = 1
        elif step == len(string) - 2:  # after the repeated branch symbol
            sets[step, E] = 1
        elif state == 6:
            sets[step, E] = 1
            state = DONE
        else:
            sets[step, symbol[state]] = 1
            nxt = string[step + 1]
            state = following[state, int(np.nonzero(symbol[state] == nxt)[0][0])]
    return sets


def encode(strings: list[np.ndarray]) -> dict[str, Tensor]:
    """Inputs (all symbols but the last), next-symbol sets, the step mask, the long-lag step."""
    steps = np.array([len(s) - 1 for s in strings])
    width = int(steps.max())
    symbols = np.zeros((len(strings), width), dtype=np.int64)
    targets = np.zeros((len(strings), width, 7), dtype=np.float32)
    for row, string in enumerate(strings):
        symbols[row, : steps[row]] = string[:-1]
        targets[row, : steps[row]] = next_symbol_sets(string)
    mask = np.arange(width)[None, :] < steps[:, None]
    key_mask = np.zeros_like(mask)
    key_mask[np.arange(len(strings)), steps - 2] = True  # predicts the penultimate symbol
    return {
        "x": one_hot(symbols, 7, mask),
        **as_tensors(y=targets, mask=mask, key_mask=key_mask, lengths=steps.astype(np.int64)),
    }


def _pad_to(tensors: dict[str, Tensor], width: int) -> dict[str, Tensor]:
    padded = {}
    for name, tensor in tensors.items():
        if tensor.dim() >= 2 and tensor.size(1) < width:
            shape = (tensor.size(0), width - tensor.size(1), *tensor.shape[2:])
            tensor = torch.cat([tensor, tensor.new_zeros(shape)], dim=1)
        padded[name] = tensor
    return padded


class ReberDataModule(SyntheticDataModule):
    def generate(self, num_sequences: int, seed: int) -> dict[str, Tensor]:
        return encode(embedded_strings(rng(seed), num_sequences))

    def fixed_sets(self) -> dict[str, dict[str, Tensor]]:
        """Training strings as drawn; validation and test strings drawn until enough are new."""
        generator = rng(self.seed)
        train = embedded_strings(generator, self.sizes["train"])
        seen = {s.tobytes() for s in train}
        held_out: list[np.ndarray] = []
        wanted = self.sizes["val"] + self.sizes["test"]
        while len(held_out) < wanted:
            for string in embedded_strings(generator, wanted):
                if string.tobytes() not in seen and len(held_out) < wanted:
                    held_out.append(string)
        parts = {
            "train": train,
            "val": held_out[: self.sizes["val"]],
            "test": held_out[self.sizes["val"] :],
        }
        encoded = {split: encode(parts[split]) for split in SPLITS}
        # One width for all splits, so a batch of any split stacks with any other.
        width = max(e["x"].size(1) for e in encoded.values())
        return {split: _pad_to(e, width) for split, e in encoded.items()}
