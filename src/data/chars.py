"""Character-level next-character prediction on a text given in the config.

The text is read as UTF-8 bytes, so any file works without a vocabulary file (ASCII text has one
byte per character): inputs are one-hot bytes, and at every step the target is the next byte.
The default is the seed notes' "hello": from "hell", emit "ello", which trains in seconds.
A longer text is cut into windows of `seq_len` characters; the first `val_fraction` and
`test_fraction` of them (at the end of the text) validate and test, the rest train. A text with
fewer than three windows trains, validates and tests on the same ones: there is nothing else.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from src.data.in_memory import InMemoryDataModule, TensorDictDataset
from src.data.tensor_cache import load_cache, save_cache

VOCABULARY = 256  # bytes


def encode(text: str) -> Tensor:
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)


def decode(codes: Tensor | list[int]) -> str:
    values = codes.tolist() if isinstance(codes, Tensor) else codes
    return bytes(values).decode("utf-8", errors="replace")


def read_text(text: str | None, text_file: str | Path | None) -> str:
    if text_file is not None:
        path = Path(text_file)
        if not path.is_file():
            raise FileNotFoundError(
                f"data.text_file={path} does not exist. Fix: give a text file that exists, or "
                "data.text_file=null to train on data.text."
            )
        text = path.read_text(encoding="utf-8")
    if not text or len(text.encode("utf-8")) < 2:
        raise ValueError(
            "the text to learn is empty or one character long: there is no next character to "
            "predict. Fix: data.text=<at least two characters> or data.text_file=<a text file>."
        )
    return text


@torch.inference_mode()
def greedy_continuation(net: torch.nn.Module, prompt: str, length: int) -> str:
    """`length` more characters after `prompt`, each the model's most likely next one."""
    if not prompt:
        raise ValueError("the prompt is empty: give prompt=<text> to continue")
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    codes = encode(prompt).tolist()
    added: list[int] = []
    for _ in range(length):
        x = torch.nn.functional.one_hot(torch.tensor([codes + added]), VOCABULARY).float()
        added.append(int(net(x.to(device))[0, -1].argmax()))
    net.train(was_training)
    return decode(added)


def windows(codes: Tensor, seq_len: int) -> tuple[Tensor, Tensor]:
    """Non-overlapping windows: inputs codes[i : i + L], targets codes[i + 1 : i + L + 1]."""
    count = (len(codes) - 1) // seq_len
    inputs = codes[: count * seq_len].view(count, seq_len)
    targets = codes[1 : count * seq_len + 1].view(count, seq_len)
    return inputs, targets


class CharsDataModule(InMemoryDataModule):
    def __init__(
        self,
        *,
        text: str | None = "hello",
        text_file: str | None = None,
        seq_len: int | None = None,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        cache_file: str | Path | None = None,
        batch_size: int = 32,
        shuffle_seed: int = 0,
        **task_info: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, shuffle_seed=shuffle_seed, **task_info)
        self.text = read_text(text, text_file)
        codes = encode(self.text)
        self.seq_len = seq_len if seq_len is not None else min(len(codes) - 1, 100)
        if not 1 <= self.seq_len <= len(codes) - 1:
            raise ValueError(
                f"data.seq_len={seq_len} does not fit a text of {len(codes)} bytes. Fix: "
                f"data.seq_len between 1 and {len(codes) - 1}, or null."
            )
        self.codes = codes
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.cache_file = cache_file

    def prepare_data(self) -> None:
        """With a `cache_file`, the encoded text goes there (a DVC stage's output); the text
        itself is the config's, so training needs nothing else."""
        if self.cache_file is not None:
            key = {"sha256": hashlib.sha256(self.codes.numpy().tobytes()).hexdigest()}
            if load_cache(Path(self.cache_file), key, rebuild="writing it again") is None:
                save_cache(Path(self.cache_file), key, {"codes": self.codes})

    def build_splits(self) -> dict[str, TensorDictDataset]:
        inputs, targets = windows(self.codes, self.seq_len)
        x = torch.nn.functional.one_hot(inputs, VOCABULARY).float()
        count = len(inputs)
        if count < 3:
            whole = TensorDictDataset(x=x, y=targets)
            return {"train": whole, "val": whole, "test": whole}
        num_test = max(1, round(count * self.test_fraction))
        num_val = max(1, round(count * self.val_fraction))
        num_train = count - num_val - num_test
        bounds = {
            "train": slice(0, num_train),
            "val": slice(num_train, num_train + num_val),
            "test": slice(num_train + num_val, count),
        }
        return {
            split: TensorDictDataset(x=x[rows], y=targets[rows]) for split, rows in bounds.items()
        }
