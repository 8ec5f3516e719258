"""Where a run's files go: one directory per run, created here rather than by Hydra.

A fresh directory gets a timestamp, the run name and a random suffix and is created with an
exclusive mkdir, so jobs started in the same second never share one. Only global rank 0 of a
DDP run creates or writes anything: ranks that Lightning starts by re-running the command find
rank 0's directory in an environment variable; ranks started by torchrun or srun, which cannot
know it, get a path that is never created (their checkpoint paths come from rank 0 anyway).
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from src.distributed import is_launch_rank_zero

RUN_DIR_ENV_VAR = "SEQLAB_RUN_DIR"


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


def create_run_dir(cfg: DictConfig) -> Path:
    """The run directory: `paths.run_dir` if set, the job's directory in a multirun, else new.

    On ranks > 0 of a DDP run: rank 0's directory, not created.
    """
    if not is_launch_rank_zero():
        return _run_dir_of_rank_zero(cfg)
    if cfg.paths.run_dir:
        run_dir = Path(cfg.paths.run_dir)
    elif (multirun_dir := _hydra_multirun_dir()) is not None:
        run_dir = multirun_dir
    else:
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        runs = Path(cfg.paths.output_dir) / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        while True:
            run_dir = runs / f"{stamp}_{cfg.run_name}_{secrets.token_hex(3)}"
            try:
                run_dir.mkdir()
                break
            except FileExistsError:
                continue
    run_dir.mkdir(parents=True, exist_ok=True)
    os.environ[RUN_DIR_ENV_VAR] = str(run_dir)
    return run_dir


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once: os.umask can only be read by setting it, which is not thread-safe.
_FILE_MODE = 0o666 & ~_umask()


def publish(tmp: str | Path, path: Path) -> None:
    """Rename a finished temporary file onto `path`, with the mode a plain open() would give
    (mkstemp makes files only their owner can read)."""
    os.chmod(tmp, _FILE_MODE)
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory and rename, so readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
