"""Where a run's files go: one directory per run, created here rather than by Hydra.

A fresh directory gets a timestamp, the run name and a random suffix and is created with an
exclusive mkdir, so jobs started in the same second never share one. Only global rank 0 of a
DDP run creates or writes anything: ranks that Lightning starts by re-running the command find
rank 0's directory in an environment variable; ranks started by torchrun or srun, which cannot
know it, get a path that is never created (their checkpoint paths come from rank 0 anyway).

Kept rather than Hydra's `hydra.run.dir`: Hydra makes that directory (mkdir with exist_ok)
before the task function runs, so it cannot refuse a full, unwritable or occupied directory with
one line, cannot keep two runs started together apart, and leaves the directory behind when the
config is then refused; its job logging would also write one log per DDP rank.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import tempfile
from datetime import datetime
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from src.config.errors import ConfigError

log = logging.getLogger("seqlab")

RUN_DIR_ENV_VAR = "SEQLAB_RUN_DIR"
CHECKPOINT_DIRNAME = "checkpoints"
# Lightning's own order (lightning.fabric.utilities.rank_zero): the first one set wins.
RANK_ENV_VARS = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def is_launch_rank_zero() -> bool:
    """Whether this process is global rank 0, read from what launchers set before it starts:
    only rank 0 creates or writes anything of the run."""
    for name in RANK_ENV_VARS:
        if name in os.environ:
            rank_zero = int(os.environ[name]) == 0
            # LOCAL_RANK alone is 0 on the first process of every node.
            if name == "LOCAL_RANK":
                rank_zero = rank_zero and int(os.environ.get("NODE_RANK", "0")) == 0
            return rank_zero
    return True


def _hydra_multirun_dir() -> Path | None:
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return Path(hydra_cfg.runtime.output_dir)


def _run_dir_of_rank_zero(cfg: DictConfig) -> Path:
    if cfg.paths.run_dir:
        return Path(cfg.paths.run_dir)
    if (multirun_dir := _hydra_multirun_dir()) is not None:
        return multirun_dir
    if os.environ.get(RUN_DIR_ENV_VAR):
        return Path(os.environ[RUN_DIR_ENV_VAR])
    return Path(cfg.paths.output_dir) / "runs" / "unknown-on-this-rank"


def create_run_dir(cfg: DictConfig, *, resuming: bool = False) -> Path:
    """The run directory: `paths.run_dir` if set, the job's directory in a multirun, else new.

    Refused before anything is written: a directory that cannot be written or whose disk has
    less than `paths.min_free_mb` free, and a given `paths.run_dir` that already holds a run
    which is not being resumed. On ranks > 0 of a DDP run: rank 0's directory, not created.
    """
    if not is_launch_rank_zero():
        return _run_dir_of_rank_zero(cfg)
    target = Path(cfg.paths.run_dir or _hydra_multirun_dir() or cfg.paths.output_dir)
    _check_free_space(target, cfg.paths.get("min_free_mb") or 0)
    try:
        run_dir = _make_run_dir(cfg)
        _check_writable(run_dir)
        _claim(run_dir)
    except OSError as error:
        raise ConfigError(
            f"cannot write the run directory {error.filename or target}: "
            f"{error.strerror or error}. Set paths.output_dir (or paths.run_dir) to a directory "
            "you can write."
        ) from None
    in_sweep = not cfg.paths.run_dir and _hydra_multirun_dir() is not None
    if (cfg.paths.run_dir or in_sweep) and not resuming:
        _check_free_to_start(run_dir, in_sweep=in_sweep)
    os.environ[RUN_DIR_ENV_VAR] = str(run_dir)
    return run_dir


# Open lock files of the run directories this process has claimed, by directory.
_CLAIMS: dict[Path, int] = {}
LOCK_FILE = ".seqlab.lock"


def _claim(run_dir: Path) -> None:
    """Hold an exclusive lock on the run directory for as long as this process runs in it, so
    that two runs started at once at one `paths.run_dir` can never both go on. The kernel drops
    the lock when the process ends, however it ends: no stale lock survives a kill."""
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(
            f"{run_dir} is in use by another run right now. Wait for it to end, or give this "
            "run another paths.run_dir (or none, for a fresh directory under "
            "paths.output_dir/runs)."
        ) from None
    _CLAIMS[run_dir] = fd


def release(run_dir: Path) -> None:
    """Let go of the run directory (the lock file stays: unlinking it would race a waiter)."""
    fd = _CLAIMS.pop(run_dir, None)
    if fd is not None:
        os.close(fd)


def _check_free_to_start(run_dir: Path, *, in_sweep: bool = False) -> None:
    """A new run may start in a given run directory unless a run there got as far as a
    checkpoint: one that died before its first is started again in the same place."""
    if holds_a_run(run_dir):
        release(run_dir)
        if in_sweep:
            raise ConfigError(
                f"{run_dir} holds a job of an earlier sweep; this one would overwrite it. Run "
                f"that sweep's unfinished jobs with `python -m src.sweeps.rerun "
                f"{run_dir.parent}`, or give this sweep another hydra.sweep.dir (or none, for a "
                "fresh one)."
            )
        raise ConfigError(
            f"paths.run_dir={run_dir} already holds a run; a new run would overwrite it. "
            f"Resume it with paths.run_dir={run_dir} ckpt_path=last, or choose another "
            "paths.run_dir (or none, for a fresh directory under paths.output_dir/runs)."
        )
    if (run_dir / "config.yaml").exists():
        log.warning(
            "%s holds a run that stopped before its first checkpoint; starting it again there",
            run_dir,
        )


# The run directories this process made (not Hydra, not the user): those it may take back.
_MADE_HERE: set[Path] = set()
# The parents this process made on the way (outputs/, outputs/runs/), removed again if empty.
_PARENTS_MADE_HERE: list[Path] = []


def _make_parents(directory: Path) -> None:
    missing = [p for p in (directory, *directory.parents) if not p.exists()]
    directory.mkdir(parents=True, exist_ok=True)
    _PARENTS_MADE_HERE.extend(missing)


def discard_if_made_here(run_dir: Path) -> None:
    """Remove a run directory this process made, when the run is refused before it starts."""
    release(run_dir)
    if run_dir in _MADE_HERE:
        shutil.rmtree(run_dir, ignore_errors=True)
        _MADE_HERE.discard(run_dir)
        for parent in _PARENTS_MADE_HERE:  # deepest first
            with contextlib.suppress(OSError):
                parent.rmdir()
        _PARENTS_MADE_HERE.clear()


def _make_run_dir(cfg: DictConfig) -> Path:
    run_dir = _choose_run_dir(cfg)
    if not run_dir.exists():
        _make_parents(run_dir.parent)
        try:
            run_dir.mkdir()
        except FileExistsError:
            return run_dir  # a run started at the same moment made it: the claim decides
        _MADE_HERE.add(run_dir)
    return run_dir


def _choose_run_dir(cfg: DictConfig) -> Path:
    if cfg.paths.run_dir:
        return Path(cfg.paths.run_dir)
    if (multirun_dir := _hydra_multirun_dir()) is not None:
        return multirun_dir
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    runs = Path(cfg.paths.output_dir) / "runs"
    _make_parents(runs)
    while True:
        # The random suffix and the exclusive mkdir keep runs started together apart.
        run_dir = runs / f"{stamp}_{cfg.run_name}_{secrets.token_hex(3)}"
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        _MADE_HERE.add(run_dir)
        return run_dir


def holds_a_run(run_dir: Path) -> bool:
    """Whether a run in `run_dir` got as far as a checkpoint or its final metrics."""
    checkpoints = run_dir / CHECKPOINT_DIRNAME
    return (run_dir / "metrics.json").exists() or (
        checkpoints.is_dir() and any(checkpoints.glob("*.ckpt"))
    )


def _check_writable(run_dir: Path) -> None:
    # Permission bits do not tell (root ignores them, read-only mounts do not show): try it.
    fd, probe = tempfile.mkstemp(dir=run_dir, prefix=".write-probe.")
    os.close(fd)
    os.unlink(probe)


def _check_free_space(target: Path, min_free_mb: float) -> None:
    """Before anything is created: on the disk of the nearest directory that exists."""
    existing = target.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free_mb = shutil.disk_usage(existing).free / 2**20
    if free_mb < min_free_mb:
        raise ConfigError(
            f"the disk of {target} has {free_mb:,.0f} MB free, less than paths.min_free_mb="
            f"{min_free_mb:g} that a run needs for its checkpoints and logs. Free some space, or "
            "set paths.output_dir to a disk with room."
        )
