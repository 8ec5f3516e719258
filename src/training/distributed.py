"""How many processes a run trains on, which one writes, and which launches cannot work.

`data.batch_size` is the global batch: all ranks together take that many samples per optimizer
step, each rank `batch_size / world_size`. With the even sharding of TensorBatchSampler, the
union of the ranks' k-th batches is then the k-th batch of a one-process run, so DDP changes the
speed and not the experiment.

Lightning's `ddp` strategy starts ranks > 0 by re-running this process's command line. That is
right only for a single run started as `python -m src.train ...`: in a Hydra multirun it would
re-run the whole sweep in every rank, and from another program (pytest, a notebook, a joblib
worker) it would re-run that program. Such launches are refused before any work.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

# Private, but Lightning has no public way to tell "re-runs the command line" (popen) apart from
# "spawns a function" (spawn, fork): its strategies keep the start method private too.
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from omegaconf import DictConfig

from src.config.errors import ConfigError, SweepError
from src.data.in_memory import check_batch_size

TRAIN_SCRIPT = Path(__file__).resolve().parents[1] / "train.py"
TRAIN_CONSOLE_SCRIPT = "seqlab-train"

ONE_JOB_PER_COMMAND = (
    "Run one job per command instead (for seed in 1 2 3; do python -m src.train "
    "trainer=ddp seed=$seed; done), or on SLURM use hydra/launcher=slurm, where SLURM starts "
    "the processes of each job (see README, 'Scale and sweeps')."
)


@dataclass(frozen=True)
class ProcessPlan:
    world_size: int
    # Lightning will start the other ranks of this node by re-running the command line.
    relaunches_command: bool
    # Lightning will run fit and test in spawned processes (ddp_spawn, ddp_fork).
    spawns_processes: bool


def plan_processes(trainer: L.Trainer) -> ProcessPlan:
    """How Lightning will launch `trainer`'s processes (it is built, but has not launched)."""
    strategy = trainer.strategy
    relaunches = (
        isinstance(strategy.launcher, _SubprocessScriptLauncher)
        and not strategy.cluster_environment.creates_processes_externally  # type: ignore[union-attr]
        and trainer.num_devices > 1
    )
    spawns = isinstance(strategy.launcher, _MultiProcessingLauncher) and trainer.num_devices > 1
    return ProcessPlan(trainer.world_size, relaunches_command=relaunches, spawns_processes=spawns)


def _started_as_train_command() -> bool:
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    as_module = main_file is not None and Path(main_file).resolve() == TRAIN_SCRIPT
    return as_module or Path(sys.argv[0]).name == TRAIN_CONSOLE_SCRIPT


def _hydra_launcher_target() -> str:
    return str(HydraConfig.get().launcher.get("_target_", ""))


def check_launch(plan: ProcessPlan) -> None:
    """Refuse launches in which DDP would re-run the wrong command."""
    if plan.world_size == 1:
        return
    if plan.spawns_processes:
        raise ConfigError(
            "a spawning trainer.strategy (ddp_spawn, ddp_fork, ...) runs fit and test in child "
            "processes whose state (epochs, best score, timings) never comes back, so "
            "metrics.json and sweeps would miss it: use trainer=ddp or trainer=ddp_cpu."
        )
    in_multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    if in_multirun and "submitit" not in _hydra_launcher_target():
        raise SweepError(
            f"a multirun (-m) job cannot train on {plan.world_size} processes: Lightning starts "
            "DDP ranks by re-running the command line, which would re-run the whole sweep in "
            f"every rank. {ONE_JOB_PER_COMMAND}"
        )
    if plan.relaunches_command and not (HydraConfig.initialized() and _started_as_train_command()):
        raise ConfigError(
            f"DDP on {plan.world_size} processes re-runs the command line for ranks > 0, so it "
            "must be started as `python -m src.train trainer=ddp ...` (or by torchrun or "
            "srun, which start the ranks themselves), not from within another program."
        )


def check_distributed(cfg: DictConfig, trainer: L.Trainer) -> ProcessPlan:
    """The process plan of this run; ConfigError if DDP cannot work as configured."""
    plan = plan_processes(trainer)
    check_batch_size(cfg.data.batch_size, plan.world_size)
    check_launch(plan)
    return plan
