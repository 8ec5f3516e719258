"""Where a resumed run continues: its checkpoint, vetted, and its own config.

A resume takes the run's config as it was saved; the command line may change only where the run
writes, how long it trains, how it reports and the recurrence's implementation (the same
weights). A default of conf/ that changed since the run does not count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from src.training.checkpoints import (
    EPOCH_ROW_KEY,
    CheckpointError,
    check_compatible,
    checkpoint_config,
    checkpoint_run_dir,
    load_checkpoint,
    load_or_fall_back,
    resolve_checkpoint,
    select,
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


@dataclass(frozen=True)
class ResumePoint:
    path: Path
    logged_step: int  # the loggers' step when the checkpoint was written (see `logged_step`)
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
        f"{key}={_plain(OmegaConf.select(cfg, key))!r} (the run: {select(saved, key)!r})"
        for key in command_keys
        if not _may_change(key) and _plain(OmegaConf.select(cfg, key)) != select(saved, key)
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
    if requested == "best":
        raise CheckpointError(
            "ckpt_path=best would take the run back to its best epoch and train its later "
            "epochs again, over last.ckpt. Continue the run with ckpt_path=last; to start again "
            "from its best weights on purpose, name the file: "
            f"ckpt_path={Path(cfg.paths.run_dir or '<run>') / 'checkpoints' / 'best.ckpt'}"
        )
    path, checkpoint, note = load_or_fall_back(
        resolve_checkpoint(requested, cfg.paths.run_dir), requested
    )
    saved = checkpoint_config(checkpoint, path)
    if command_keys is None or any(k.split(".")[0] in ("data", "model") for k in command_keys):
        # The task or model as asked: a checkpoint of another is refused as such.
        check_compatible(saved, OmegaConf.to_container(cfg, resolve=True), path)  # type: ignore[arg-type]
    if not cfg.paths.run_dir and (run_dir := checkpoint_run_dir(path)) is not None:
        cfg.paths.run_dir = str(run_dir)
    config = resumed_config(cfg, saved, command_keys, path)
    # The run as it resumes: its own task and model unless the command line changed them (a
    # resume of data=adding needs no data=adding: the run's config says so).
    check_compatible(saved, OmegaConf.to_container(config, resolve=True), path)  # type: ignore[arg-type]
    check_epochs(config, checkpoint, path)
    if note is None:
        note = rollback_note(path, checkpoint, config)
    return ResumePoint(path, logged_step(checkpoint), config, note, checkpoint.get(EPOCH_ROW_KEY))


def logged_step(checkpoint: Mapping[str, Any]) -> int:
    """The step Lightning's loggers had reached: its count of training calls that stepped the
    optimizer. It equals `global_step` only with one optimizer step per call; truncated BPTT
    and `steps_per_call` take several."""
    fit_loop = select(checkpoint, "loops.fit_loop") or {}
    stepped = fit_loop.get("epoch_loop.state_dict", {}).get("_batches_that_stepped")
    if stepped is None:
        return int(checkpoint.get("global_step", 0))
    # A checkpoint written at a call's end (a signal's) precedes Lightning's count of that
    # call, which the run has trained on and logged at that step.
    progress = fit_loop.get("epoch_loop.batch_progress", {}).get("total", {})
    return int(stepped) + max(0, progress.get("processed", 0) - progress.get("completed", 0))


def epochs_begun(checkpoint: Mapping[str, Any]) -> int:
    """Epochs the run had begun when `checkpoint` was written (a mid-epoch one counts its own)."""
    progress = select(checkpoint, "loops.fit_loop.epoch_progress.current.started")
    return int(progress) if progress is not None else int(checkpoint.get("epoch", 0)) + 1


def check_epochs(config: DictConfig, checkpoint: Mapping[str, Any], path: Path) -> None:
    """A resume can only go on: refuse a max_epochs below the epochs the run has begun."""
    max_epochs, begun = config.trainer.get("max_epochs"), epochs_begun(checkpoint)
    if max_epochs is not None and max_epochs != -1 and max_epochs < begun:
        raise CheckpointError(
            f"trainer.max_epochs={max_epochs} is below the {begun} epochs that {path} has "
            f"already begun; a resumed run can only go on. Give trainer.max_epochs={begun} or "
            "more, or leave it out to keep the run's own."
        )


def rollback_note(path: Path, checkpoint: Mapping[str, Any], config: DictConfig) -> str | None:
    """What resuming from an earlier checkpoint than the run's last does, said before it does."""
    last = path.parent / "last.ckpt"
    if path.name == "last.ckpt" or not last.is_file():
        return None
    try:
        last_begun = epochs_begun(load_checkpoint(last))
    except CheckpointError:
        return None
    begun = epochs_begun(checkpoint)
    if last_begun <= begun:
        return None
    return (
        f"resuming from {path.name}, written in epoch {begun - 1}, not from the run's last "
        f"checkpoint (epoch {last_begun - 1}): the epochs after {begun - 1} are trained again "
        f"from there, up to trainer.max_epochs={config.trainer.get('max_epochs')}."
    )
