"""A trained run brought back from its checkpoint, for evaluation and prediction.

The run's own config (stored in the checkpoint, or its run directory's config.yaml) is the base;
what the command line overrides is applied on top, so `data.seed=7` evaluates on fresh data while
everything else stays as trained. A checkpoint whose model or task the result does not match is
refused before any weights load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.config.checks import check_config
from src.config.errors import ConfigError
from src.config.instantiate import instantiate_group
from src.data.in_memory import InMemoryDataModule
from src.models.module import SequenceModule
from src.training.checkpoints import (
    CheckpointError,
    check_compatible,
    checkpoint_config,
    checkpoint_run_dir,
    load_checkpoint,
    resolve_checkpoint,
    select,
)
from src.training.run import build_module

SPLITS = ("train", "val", "test")
# Keys of conf/eval.yaml and conf/predict.yaml themselves, not of the trained run's config.
COMMAND_KEYS = ("ckpt_path", "split", "output", "output_dir", "paths.run_dir")
# The group choices a checkpoint's config records, by the key that names them.
CHOICE_KEYS = {"data": "name", "model": "cell"}


@dataclass(frozen=True)
class RestoredRun:
    cfg: DictConfig  # the trained run's config with the command line's overrides
    module: SequenceModule
    datamodule: InMemoryDataModule
    checkpoint: Path
    home: Path  # the checkpoint's run directory, or the checkpoint's directory


def restore_run(command: DictConfig, overrides: list[str]) -> RestoredRun:
    if OmegaConf.is_missing(command, "ckpt_path") or not command.ckpt_path:
        raise ConfigError(
            "ckpt_path is required: ckpt_path=<run directory>/checkpoints/best.ckpt, or "
            "paths.run_dir=<run directory> ckpt_path=best"
        )
    if command.split not in SPLITS:
        raise ConfigError(f"split={command.split!r} is not one of {', '.join(SPLITS)}.")
    path = resolve_checkpoint(str(command.ckpt_path), command.paths.run_dir)
    checkpoint = load_checkpoint(path)
    saved = checkpoint_config(checkpoint, path)
    cfg = apply_overrides(OmegaConf.create(saved), command, overrides)
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException:
        check_config(cfg)  # says which key does not resolve
        raise
    # The checkpoint's own refusal first: it names the whole mismatch, not its first key.
    check_compatible(saved, resolved, path)  # type: ignore[arg-type]
    check_config(cfg)
    return _restored(cfg, checkpoint, path)


def restore_checkpoint(path: Path) -> RestoredRun:
    """The run exactly as it was saved in the checkpoint at `path`, without overrides."""
    checkpoint = load_checkpoint(path)
    return _restored(OmegaConf.create(checkpoint_config(checkpoint, path)), checkpoint, path)


def _restored(cfg: DictConfig, checkpoint: dict[str, Any], path: Path) -> RestoredRun:
    module = build_module(cfg)
    module.on_load_checkpoint(checkpoint)
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise CheckpointError(f"{path}: its weights do not fit the model ({error}).") from None
    datamodule = instantiate_group(cfg.data, "data", shuffle_seed=cfg.seed)
    datamodule.prepare_data()
    datamodule.setup()
    return RestoredRun(cfg, module, datamodule, path, checkpoint_run_dir(path) or path.parent)


def apply_overrides(saved: DictConfig, command: DictConfig, overrides: list[str]) -> DictConfig:
    """The saved run config with each command-line override's value, as Hydra composed it."""
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key in COMMAND_KEYS or key.startswith("hydra"):
            continue
        if override.is_delete():
            _delete(saved, key)
            continue
        if key in CHOICE_KEYS and override.value() == select(saved, f"{key}.{CHOICE_KEYS[key]}"):
            continue  # the run's own task or cell: its values stay as trained
        value: Any = OmegaConf.select(command, key)
        if isinstance(value, DictConfig):
            value = OmegaConf.to_container(value, resolve=True)
        OmegaConf.update(saved, key, value, force_add=True)
        if key.startswith("data.") and saved.data.get("cache_file"):
            # Other data than the run's: never rewrite the run's (DVC-tracked) cache file.
            saved.data.cache_file = None
    return saved


def _delete(cfg: DictConfig, key: str) -> None:
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if isinstance(parent, DictConfig) and leaf in parent:
        parent.pop(leaf)
