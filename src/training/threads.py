"""Torch threads per process, so that jobs running side by side do not fight over the cores."""

from __future__ import annotations

import os

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode


def _available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parallel_jobs() -> int:
    """Jobs that the Hydra launcher runs at once on this machine (joblib's n_jobs), else 1."""
    if not HydraConfig.initialized():
        return 1
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN or "joblib" not in hydra_cfg.launcher.get("_target_", ""):
        return 1
    n_jobs = hydra_cfg.launcher.get("n_jobs") or -1
    # joblib: -1 means one job per core, -2 all cores but one, ...
    return n_jobs if n_jobs > 0 else max(1, _available_cores() + 1 + n_jobs)


def configure_threads(num_threads: int | None) -> int:
    """Set torch's intra-op threads: `num_threads`, else this job's share of the cores in a
    parallel sweep, else torch's default. Returns the number in use."""
    jobs = parallel_jobs()
    if not num_threads and jobs > 1:
        num_threads = max(1, _available_cores() // jobs)
    if num_threads:
        torch.set_num_threads(num_threads)
        # Lightning's DDP launcher resets threads to cores / processes unless this is set.
        os.environ["OMP_NUM_THREADS"] = str(num_threads)
    return torch.get_num_threads()
