"""Checkpoints written atomically, next to where they belong.

Lightning's own writer stages a checkpoint in the system's temporary directory and moves it into
place, a copy rather than a rename when /tmp is another disk, so a crash or a full disk in
between can leave a truncated file under the final name. Here the checkpoint goes to a temporary
file in its own directory, is flushed to disk, and only then renamed over the old one: a reader
(or a resume) sees the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from src.run_dir import atomic_write_bytes


def save_atomically(checkpoint: dict[str, Any], path: Path) -> None:
    # Serialised in memory first: torch's writer reports a failed write as a RuntimeError
    # without its errno, and a full disk must be told apart from a bug.
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write_bytes(path, buffer.getbuffer(), sync=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        save_atomically(checkpoint, Path(path))
