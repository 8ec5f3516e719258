"""Finding, safely loading and vetting checkpoints before anything is resumed or evaluated.

Checkpoints are read with `weights_only=True`: only tensors and plain data are unpickled, so a
checkpoint file can never run code. Each one carries its run's config under `seqlab_config`, which
is how a checkpoint of another model or task is recognised and refused before any weights load.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from src.config_checks import ConfigError

CHECKPOINT_DIRNAME = "checkpoints"
CHECKPOINT_ALIASES = ("best", "last")
# The training metrics of the epoch a checkpoint ends (src/callbacks.py, EpochRowInCheckpoints).
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
# What a resumed run may change: where it writes, how long it trains, how it reports, and the
# recurrence's implementation (same weights). Everything else comes from the run as it was.
RESUME_MAY_CHANGE = (
    "ckpt_path",
    "paths",
    "num_threads",
    "trainer.max_epochs",
    "trainer.enable_progress_bar",
    "logger",
    "model.implementation",
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
    except zipfile.BadZipFile as error:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({error}).") from None
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
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({reason}).") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint: it holds no state_dict.")
    return checkpoint


def checkpoint_config(checkpoint: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The config the checkpoint's run was composed with: stored in it, or its run's config.yaml."""
    config = checkpoint.get("seqlab_config")
    if config:
        return dict(config)
    run_dir = checkpoint_run_dir(path)
    if run_dir is not None:
        return OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))  # type: ignore[return-value]
    raise CheckpointError(
        f"{path} holds no seqlab run config and sits in no run directory with a config.yaml: "
        "it was not written by seqlab."
    )


def _select(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def check_compatible(saved: Mapping[str, Any], wanted: Mapping[str, Any], path: Path) -> None:
    """Refuse a checkpoint whose task or weight shapes differ from the run that loads it."""
    differences = [
        f"{key}={_select(saved, key)!r} (this run: {_select(wanted, key)!r})"
        for key in ARCHITECTURE_KEYS
        if _select(saved, key) != _select(wanted, key)
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


@dataclass(frozen=True)
class ResumePoint:
    path: Path
    global_step: int  # optimizer steps taken when the checkpoint was written
    config: DictConfig  # the resumed run's own config, with what a resume may change
    fallback_note: str | None = None  # why `path` is not the checkpoint asked for
    epoch_row: dict[str, float] | None = None


def _plain(value: Any) -> Any:
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _may_change(key: str) -> bool:
    return any(key == k or key.startswith(f"{k}.") for k in RESUME_MAY_CHANGE)


def resumed_config(
    cfg: DictConfig, saved: Mapping[str, Any], command_keys: list[str] | None, path: Path
) -> DictConfig:
    """The run being resumed as it was saved; the command line may change only what
    RESUME_MAY_CHANGE names, and a default of conf/ that changed since the run does not count.
    Without a command line (`train()` called with a composed config) the config is as given."""
    if command_keys is None:
        return cfg
    changed = [
        f"{key}={_plain(OmegaConf.select(cfg, key))!r} (the run: {_select(saved, key)!r})"
        for key in command_keys
        if not _may_change(key) and _plain(OmegaConf.select(cfg, key)) != _select(saved, key)
    ]
    if changed:
        raise CheckpointError(
            f"resuming {path} cannot change {', '.join(changed)}. Resume with only "
            "paths.run_dir=<run> ckpt_path=last (the run's own config is used), or start a new "
            "run from its weights elsewhere."
        )
    config = OmegaConf.create(dict(saved))
    # What the command line set, and where the run is: nothing else of conf/'s defaults, which
    # would silently replace the run's own values (a resume would train 100 epochs, not 3).
    for key in ("ckpt_path", "paths.run_dir", *(k for k in command_keys if _may_change(k))):
        value = _plain(OmegaConf.select(cfg, key, default=None))
        OmegaConf.update(config, key, value, force_add=True, merge=False)
    return config


def resume_point(cfg: DictConfig, command_keys: list[str] | None) -> ResumePoint | None:
    """The checkpoint `ckpt_path` resumes from, vetted; None for a fresh run. `command_keys`
    are the config keys and groups the command line set.

    A run resumed from a checkpoint in a run directory continues in that directory (its
    checkpoints, metrics and logger runs go on), unless `paths.run_dir` says otherwise.
    """
    if not cfg.get("ckpt_path"):
        return None
    requested = str(cfg.ckpt_path)
    path, checkpoint, note = load_or_fall_back(
        resolve_checkpoint(requested, cfg.paths.run_dir), requested
    )
    saved = checkpoint_config(checkpoint, path)
    check_compatible(saved, OmegaConf.to_container(cfg, resolve=True), path)  # type: ignore[arg-type]
    if not cfg.paths.run_dir and (run_dir := checkpoint_run_dir(path)) is not None:
        cfg.paths.run_dir = str(run_dir)
    config = resumed_config(cfg, saved, command_keys, path)
    step = int(checkpoint.get("global_step", 0))
    return ResumePoint(path, step, config, note, checkpoint.get(EPOCH_ROW_KEY))
