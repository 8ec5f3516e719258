"""Refuse sweeps that would optimize the wrong way, before the first trial trains."""

from __future__ import annotations

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from src.config_checks import ConfigError

DIRECTION_OF_MODE = {"min": "minimize", "max": "maximize"}


def check_sweep(cfg: DictConfig) -> None:
    """An Optuna sweep over the monitored metric must go the way that metric improves."""
    if not HydraConfig.initialized():
        return
    sweeper = HydraConfig.get().sweeper
    if "optuna" not in str(sweeper.get("_target_", "")):
        return
    if cfg.get("optimized_metric") != cfg.data.monitor:
        return
    expected = DIRECTION_OF_MODE[cfg.data.monitor_mode]
    if str(sweeper.direction) != expected:
        raise ConfigError(
            f"hydra.sweeper.direction={sweeper.direction} but {cfg.data.monitor} improves with "
            f"data.monitor_mode={cfg.data.monitor_mode}: set hydra.sweeper.direction={expected}, "
            "or use the hparams_search preset of this task (multiply_optuna, mnist_optuna)."
        )
