"""One job of a sweep: when it fails, its reason is recorded and the sweep goes on.

Hydra's launchers end a whole sweep on the first job that raises, or that exits: the basic
sweeper re-raises a failed job's exception after its batch, Optuna after a failed trial, and a
SystemExit escapes every launcher at once. So the task function of a multirun job never lets a
failure out. It writes `failure.json` (src/sweeps/records.py) and the reason into the job's
train.log, and returns a `FailedJob` in place of the metric: Optuna marks that trial failed and
never counts it as a best value, and the other sweepers only collect it.

Three things still stop a sweep: `sweep.fail_fast=true` (the first failure ends it, as Hydra's
launchers would); a mistake of the sweep itself, which every job would meet (DDP in a local
multirun, an Optuna direction against the metric); and a signal to the process that runs the
sweep (Ctrl+C, or SIGTERM from a scheduler), which saves the job's checkpoint and stops there.
Either way the summary then lists the jobs that never started, and
`python -m src.sweeps.rerun <sweep dir>` goes on from there.
Only the process that runs the sweep can stop it: a job in a process of its own (the parallel
launcher, SLURM) that fails, for whatever reason, is recorded, and the sweep goes on.

After every job the sweep summary is written again, so it is current while the sweep runs and
even if the sweeper itself dies.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from src.config.errors import REFUSED_SWEEP, CommandFailed
from src.sweeps.records import Failure, clear_failure, write_failure
from src.sweeps.summary import finish_sweep, summarize_quietly

log = logging.getLogger("seqlab")

# Set by `python -m src.sweeps.rerun`: jobs that finished are not run again.
RERUN_ENV_VAR = "SEQLAB_SWEEP_RERUN"
# Where a rerun moves a finished job whose directory holds other overrides than the job has now
# (an Optuna trial proposed afresh after an earlier one changed).
REPLACED_DIRNAME = ".replaced"

_sweep_runs_here = False


def mark_sweep_process() -> None:
    """Called where the sweep itself runs: a signal there stops the sweep, not only a job."""
    global _sweep_runs_here
    _sweep_runs_here = True


@dataclass(frozen=True)
class SweepJob:
    number: int
    directory: Path
    sweep_dir: Path
    overrides: list[str]


class FailedJob:
    """What a failed job returns to its sweeper in place of a metric. It cannot be made a float,
    so Optuna marks the trial failed; its text names the job and the reason."""

    def __init__(self, number: int, reason: str) -> None:
        self.number = number
        self.reason = reason

    def __float__(self) -> float:
        raise ValueError(str(self))

    def __str__(self) -> str:
        return f"job {self.number} failed ({self.reason})"

    __repr__ = __str__


def current_job() -> SweepJob | None:
    """This job of a multirun; None for a single run."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return SweepJob(
        number=int(hydra_cfg.job.num),
        directory=Path(hydra_cfg.runtime.output_dir),
        sweep_dir=Path(hydra_cfg.sweep.dir),
        overrides=[str(o) for o in hydra_cfg.overrides.task],
    )


def objective(cfg: DictConfig, results: Mapping[str, Any]) -> float | None:
    """The number a sweeper optimizes: the best `optimized_metric` of the run, else its last."""
    metric = cfg.get("optimized_metric")
    value = results.get(f"best_{metric}", results.get(metric))
    return float(value) if value is not None else None


def run_job(
    cfg: DictConfig, work: Callable[[DictConfig], Mapping[str, Any]]
) -> float | FailedJob | None:
    """Run `work` (train, test, return the results) as this command's task function."""
    job = current_job()
    if job is None:
        return objective(cfg, work(cfg))
    if os.environ.get(RERUN_ENV_VAR):
        finished = _finished_results(job)
        if finished is not None:
            print(f"seqlab: job {job.number} finished in an earlier run; kept", flush=True)
            clear_failure(job.directory)  # a later attempt's refusal, if any, is void
            return objective(cfg, finished)
        _resume_where_it_stopped(cfg, job)
    clear_failure(job.directory)
    stopping = False  # finish_sweep then writes the summary, and the last line
    try:
        return objective(cfg, work(cfg))
    except CommandFailed as failure:
        # Its message is on stderr already, and in train.log where the run had one.
        _record(job, failure.reason, int(failure.code), failure.message)
        stops_the_sweep = (
            failure.reason == REFUSED_SWEEP
            or failure.reason.startswith("signal")
            or _fails_fast(cfg)
        )
        if stops_the_sweep and _sweep_runs_here:
            stopping = True
            finish_sweep(job.sweep_dir)
            raise
        return FailedJob(job.number, failure.reason)
    except KeyboardInterrupt:  # a second Ctrl+C, or one outside training
        _record(job, "signal SIGINT", 130, "interrupted (Ctrl+C)")
        stopping = True
        finish_sweep(job.sweep_dir)
        raise
    except Exception as error:
        message = f"{type(error).__name__}: {error}"
        _append_to_log(job.directory, traceback.format_exc())
        print(
            f"seqlab: job {job.number} crashed: {message} (traceback in "
            f"{job.directory / 'train.log'})",
            file=sys.stderr,
        )
        _record(job, "crashed", 1, message)
        if _fails_fast(cfg) and _sweep_runs_here:
            stopping = True
            finish_sweep(job.sweep_dir)
            raise CommandFailed(1, "crashed", message) from None
        return FailedJob(job.number, "crashed")
    finally:
        if not stopping:
            summarize_quietly(job.sweep_dir)


def _fails_fast(cfg: DictConfig) -> bool:
    return bool((cfg.get("sweep") or {}).get("fail_fast", False))


def _record(job: SweepJob, reason: str, status: int, message: str) -> None:
    job.directory.mkdir(parents=True, exist_ok=True)
    write_failure(job.directory, Failure(job.number, reason, status, message, job.overrides))
    _append_to_log(job.directory, f"seqlab: job {job.number} failed ({reason}): {message}")


def _append_to_log(job_dir: Path, text: str) -> None:
    job_dir.mkdir(parents=True, exist_ok=True)
    with (job_dir / "train.log").open("a") as handle:
        handle.write(text.rstrip("\n") + "\n")


def _finished_results(job: SweepJob) -> dict[str, Any] | None:
    """The results of this job from an earlier run of the sweep, if it finished with the
    overrides it has now; a finished job with other overrides is moved aside."""
    metrics_file = job.directory / "metrics.json"
    if not metrics_file.is_file():
        return None
    overrides_file = job.directory / "overrides.yaml"
    earlier = [str(o) for o in OmegaConf.load(overrides_file)] if overrides_file.is_file() else []
    if set(earlier) <= set(job.overrides):
        return json.loads(metrics_file.read_text())
    replaced = job.sweep_dir / REPLACED_DIRNAME / job.directory.name
    replaced.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(replaced, ignore_errors=True)
    shutil.move(job.directory, replaced)
    job.directory.mkdir()
    log.warning(
        "job %d of the earlier run had other overrides (%s); moved to %s",
        job.number,
        " ".join(earlier),
        replaced,
    )
    return None


def _resume_where_it_stopped(cfg: DictConfig, job: SweepJob) -> None:
    """A job that got as far as a checkpoint goes on from it rather than from the start."""
    if (job.directory / "checkpoints" / "last.ckpt").is_file():
        with open_dict(cfg):
            cfg.paths.run_dir = str(job.directory)
            cfg.ckpt_path = "last"
        print(f"seqlab: job {job.number} resumes from its last checkpoint", flush=True)
