"""The study's runs as the training stages leave them: runs/study/<task>/<cell>/seed<seed>/."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from src.tracking.plots import read_epoch_curves

STUDY_DIR = Path("runs/study")


@dataclass(frozen=True)
class Run:
    task: str
    cell: str
    seed: int
    path: Path
    metrics: dict[str, Any]
    config: dict[str, Any]

    @property
    def best_checkpoint(self) -> Path:
        return self.path / "checkpoints" / "best.ckpt"

    def curve(self, column: str) -> list[tuple[int, float]]:
        return epoch_curve(self.path / "csv" / "metrics.csv", column)


class MissingRunError(FileNotFoundError):
    """A run the study lists has not left its metrics; the message names it and the fix."""


def run_dir(task: str, cell: str, seed: int, root: Path = STUDY_DIR) -> Path:
    return root / task / cell / f"seed{seed}"


def load_run(task: str, cell: str, seed: int, root: Path = STUDY_DIR) -> Run:
    path = run_dir(task, cell, seed, root)
    metrics_file = path / "metrics.json"
    if not metrics_file.exists():
        raise MissingRunError(
            f"{metrics_file} is missing: run `dvc repro` (or `python -m src.repro "
            f"train_{task if task in ('multiply', 'mnist') else 'task'}`) first"
        )
    config = OmegaConf.to_container(OmegaConf.load(path / "config.yaml"))
    return Run(task, cell, seed, path, json.loads(metrics_file.read_text()), config)  # type: ignore[arg-type]


def load_study(study: dict[str, Any], root: Path = STUDY_DIR) -> list[Run]:
    """Every run the study in params.yaml lists, in its order: tasks, then cells, then seeds."""
    seeds = {"multiply": study["multiply_seeds"], "mnist": study["mnist_seeds"]}
    for task in study.get("tasks") or []:
        seeds[task] = study["task_seeds"]
    return [
        load_run(task, cell, seed, root)
        for task, task_seeds in seeds.items()
        for cell in study["cells"]
        for seed in task_seeds
    ]


def epoch_curve(metrics_csv: Path, column: str) -> list[tuple[int, float]]:
    """(epoch, value) of one train/ or val/ column of Lightning's CSV log."""
    return sorted(read_epoch_curves(metrics_csv).get(column, {}).items())


@dataclass(frozen=True)
class Summary:
    mean: float
    sd: float | None  # None for a single run
    low: float
    high: float
    n: int


def summarise(values: Iterable[float]) -> Summary:
    values = list(values)
    sd = statistics.stdev(values) if len(values) > 1 else None
    return Summary(statistics.fmean(values), sd, min(values), max(values), len(values))
