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

import logging
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate

# Private, but the only way to tell "re-runs the command line" apart from "spawns a function".
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from omegaconf import DictConfig

from src.config_checks import ConfigError

# Lightning's own order (lightning.fabric.utilities.rank_zero): the first one set wins.
RANK_ENV_VARS = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")
TRAIN_SCRIPT = Path(__file__).with_name("train.py").resolve()

ONE_JOB_PER_COMMAND = (
    "Run one job per command instead (for seed in 1 2 3; do python -m src.train "
    "trainer=ddp seed=$seed; done), or on SLURM use hydra/launcher=slurm, where SLURM starts "
    "the processes of each job (see README, 'Scale and sweeps')."
)


def is_launch_rank_zero() -> bool:
    """Whether this process is global rank 0, read from what launchers set before it starts."""
    for name in RANK_ENV_VARS:
        if name in os.environ:
            rank_zero = int(os.environ[name]) == 0
            # LOCAL_RANK alone is 0 on the first process of every node.
            if name == "LOCAL_RANK":
                rank_zero = rank_zero and int(os.environ.get("NODE_RANK", "0")) == 0
            return rank_zero
    return True


@dataclass(frozen=True)
class ProcessPlan:
    world_size: int
    # Lightning will start the other ranks of this node by re-running the command line.
    relaunches_command: bool
    # Lightning will run fit and test in spawned processes (ddp_spawn, ddp_fork).
    spawns_processes: bool


@contextmanager
def _lightning_info_silenced():
    # The probe Trainer would print "GPU available ..." a second time.
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    previous = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = previous


def plan_processes(trainer_cfg: DictConfig) -> ProcessPlan:
    """Ask Lightning itself (a Trainer that is built but never run) how it would launch."""
    with _lightning_info_silenced():
        probe: L.Trainer = instantiate(
            trainer_cfg,
            logger=False,
            callbacks=[],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
    strategy = probe.strategy
    relaunches = (
        isinstance(strategy.launcher, _SubprocessScriptLauncher)
        and not strategy.cluster_environment.creates_processes_externally  # type: ignore[attr-defined]
        and probe.num_devices > 1
    )
    spawns = isinstance(strategy.launcher, _MultiProcessingLauncher) and probe.num_devices > 1
    return ProcessPlan(probe.world_size, relaunches_command=relaunches, spawns_processes=spawns)


def _started_as_train_command() -> bool:
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is not None and Path(main_file).resolve() == TRAIN_SCRIPT


def _hydra_launcher_target() -> str:
    return str(HydraConfig.get().launcher.get("_target_", ""))


def check_batch_size(batch_size: int, world_size: int) -> None:
    if batch_size % world_size:
        raise ConfigError(
            f"data.batch_size={batch_size} is the global batch of all {world_size} processes and "
            f"must divide by {world_size}: use a multiple of {world_size}, or change "
            "trainer.devices / trainer.num_nodes."
        )


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
        raise ConfigError(
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


def check_distributed(cfg: DictConfig) -> ProcessPlan:
    """The process plan of this run; ConfigError if DDP cannot work as configured."""
    plan = plan_processes(cfg.trainer)
    check_batch_size(cfg.data.batch_size, plan.world_size)
    check_launch(plan)
    return plan


def per_rank_batch_size(batch_size: int, world_size: int) -> int:
    check_batch_size(batch_size, world_size)
    return batch_size // world_size
