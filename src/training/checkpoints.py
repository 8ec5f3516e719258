"""Checkpoints: written atomically, and found, verified and vetted before anything loads them.

Checkpoints are read with `weights_only=True`: only tensors and plain data are unpickled, so a
checkpoint file can never run code. Each one carries its run's config as Lightning's
`hyper_parameters`, which is how a checkpoint of another model or task is recognised and refused
before any weights load.

Lightning's own writer stages a checkpoint in the system's temporary directory and moves it into
place, a copy rather than a rename when /tmp is another disk, so a crash or a full disk in
between can leave a truncated file under the final name. `AtomicCheckpointIO` writes to a
temporary file in the checkpoint's own directory, flushes it to disk, and only then renames it.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import OmegaConf

from src.atomic import atomic_write_bytes
from src.config.errors import ConfigError
from src.tracking.run_dir import CHECKPOINT_DIRNAME

CHECKPOINT_ALIASES = ("best", "last")
# Where Lightning keeps the LightningModule's hyperparameters: for seqlab, the run's config.
CONFIG_KEY = "hyper_parameters"
# The training metrics of the epoch a checkpoint ends (training/callbacks.py,
# EpochRowInCheckpoints).
EPOCH_ROW_KEY = "seqlab_epoch_row"
# What must agree between a checkpoint's run and the run that loads it: the task and the shape
# of every weight.
ARCHITECTURE_KEYS = (
    "data.name",
    "data.task",
    "data.mode",
    "model.cell",
    "model.input_size",
    "model.output_size",
    "model.hidden_size",
    "model.num_layers",
    "model.bidirectional",
)


class CheckpointError(ConfigError):
    """A checkpoint that is missing, unreadable, unsafe or from another model or task."""


def resolve_checkpoint(ckpt_path: str, run_dir: str | None) -> Path:
    """`best` or `last` of `run_dir`, or a file; refuse what does not exist."""
    if ckpt_path in CHECKPOINT_ALIASES:
        if not run_dir:
            raise CheckpointError(
                f"ckpt_path={ckpt_path} names a checkpoint of a run directory: give it as "
                f"paths.run_dir=<run directory> ckpt_path={ckpt_path}."
            )
        path = Path(run_dir) / CHECKPOINT_DIRNAME / f"{ckpt_path}.ckpt"
    else:
        path = Path(ckpt_path)
    if not path.is_file():
        raise CheckpointError(f"ckpt_path={ckpt_path}: no checkpoint file at {path}.")
    return path


def checkpoint_run_dir(path: Path) -> Path | None:
    """The run directory a checkpoint was saved in, if it sits in one (`<run>/checkpoints/`)."""
    run_dir = path.resolve().parent.parent
    if path.resolve().parent.name == CHECKPOINT_DIRNAME and (run_dir / "config.yaml").is_file():
        return run_dir
    return None


def _check_zip_records(path: Path) -> None:
    """Refuse a checkpoint whose bytes changed on disk: torch.load does not check the CRC-32
    that its zip format stores for every record, and would load flipped bits as weights."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad_record = archive.testzip()
    except Exception as error:  # a damaged directory fails as BadZipFile, UnicodeDecodeError...
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({reason}).") from None
    if bad_record is not None:
        raise CheckpointError(f"{path} is corrupt: its record {bad_record} fails its CRC-32 check.")


def load_checkpoint(path: Path) -> dict[str, Any]:
    if zipfile.is_zipfile(path) or path.stat().st_size == 0:
        _check_zip_records(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        blocked = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line.upper()]
        if blocked:
            raise CheckpointError(
                f"{path}: refused to load: it holds objects other than tensors and plain data, "
                f"which could run code ({blocked[0]})."
            ) from None
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint.") from None
    except Exception as error:  # arbitrary bytes fail in arbitrary ways: KeyError, IndexError...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({reason}).") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint: it holds no state_dict.")
    return checkpoint


def checkpoint_config(checkpoint: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The config the checkpoint's run was composed with: stored in it, or its run's config.yaml."""
    config = checkpoint.get(CONFIG_KEY)
    if config:
        return dict(config)
    run_dir = checkpoint_run_dir(path)
    if run_dir is not None:
        return OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))  # type: ignore[return-value]
    raise CheckpointError(
        f"{path} holds no seqlab run config and sits in no run directory with a config.yaml: "
        "it was not written by seqlab."
    )


def select(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def check_compatible(saved: Mapping[str, Any], wanted: Mapping[str, Any], path: Path) -> None:
    """Refuse a checkpoint whose task or weight shapes differ from the run that loads it."""
    differences = [
        f"{key}={select(saved, key)!r} (this run: {select(wanted, key)!r})"
        for key in ARCHITECTURE_KEYS
        if select(saved, key) != select(wanted, key)
    ]
    if differences:
        raise CheckpointError(
            f"{path} is from another model or task: it has {', '.join(differences)}. "
            "Use a checkpoint of this model and task, or set the run to match it."
        )


def _newest_first(directory: Path, excluding: Path) -> list[Path]:
    others = [p for p in directory.glob("*.ckpt") if p.resolve() != excluding.resolve()]
    return sorted(others, key=lambda p: p.stat().st_mtime_ns, reverse=True)


def newest_intact(directory: Path, excluding: Path) -> tuple[Path, dict[str, Any]] | None:
    """The most recently written checkpoint in `directory` that loads, other than `excluding`."""
    for path in _newest_first(directory, excluding):
        try:
            return path, load_checkpoint(path)
        except CheckpointError:
            continue
    return None


def load_or_fall_back(path: Path, requested: str) -> tuple[Path, dict[str, Any], str | None]:
    """The checkpoint at `path`; if it is unreadable and was asked for as `best` or `last`, the
    newest intact one beside it, with a note saying so. A file named explicitly is never swapped
    for another: its error names the alternative instead."""
    try:
        return path, load_checkpoint(path), None
    except CheckpointError as error:
        fallback = newest_intact(path.parent, excluding=path)
        if fallback is None:
            raise CheckpointError(
                f"{error} No intact checkpoint is left beside it in {path.parent}: start a new "
                "run (without ckpt_path)."
            ) from None
        other, checkpoint = fallback
        step = int(checkpoint.get("global_step", 0))
        if requested not in CHECKPOINT_ALIASES:
            raise CheckpointError(
                f"{error} The newest intact checkpoint beside it is {other} (step {step}): "
                f"resume from it with ckpt_path={other}."
            ) from None
        note = f"{error} Falling back to {other} (step {step}), the newest intact checkpoint."
        return other, checkpoint, note


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
