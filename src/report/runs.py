"""The study's runs as the training stages leave them:
runs/study/<task>/<protocol>/<cell>/seed<seed>/."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from src.report.published import TASKS
from src.tracking.plots import read_epoch_curves

STUDY_DIR = Path("runs/study")


@dataclass(frozen=True)
class Run:
    task: str
    protocol: str
    cell: str
    seed: int
    path: Path
    metrics: dict[str, Any]
    config: dict[str, Any]

    @property
    def score(self) -> float:
        """The test metric the task's published figures report, as a fraction."""
        return float(self.metrics[TASKS[self.task].metric])

    @property
    def best_checkpoint(self) -> Path:
        return self.path / "checkpoints" / "best.ckpt"

    def curve(self, column: str) -> list[tuple[int, float]]:
        return epoch_curve(self.path / "csv" / "metrics.csv", column)


class MissingRunError(FileNotFoundError):
    """A run the study lists has not left its metrics; the message names it and the fix."""


def run_dir(task: str, protocol: str, cell: str, seed: int, root: Path = STUDY_DIR) -> Path:
    return root / task / protocol / cell / f"seed{seed}"


def stage_group(task: str) -> str:
    return f"train_{task}" if task in ("multiply", "mnist") else "train_task"


def load_run(task: str, protocol: str, cell: str, seed: int, root: Path = STUDY_DIR) -> Run:
    path = run_dir(task, protocol, cell, seed, root)
    metrics_file = path / "metrics.json"
    if not metrics_file.exists():
        raise MissingRunError(
            f"{metrics_file} is missing: run `dvc repro` (or `python -m src.repro "
            f"{stage_group(task)}`) first"
        )
    config = OmegaConf.to_container(OmegaConf.load(path / "config.yaml"))
    metrics = json.loads(metrics_file.read_text())
    return Run(task, protocol, cell, seed, path, metrics, config)  # type: ignore[arg-type]


def study_seeds(study: dict[str, Any]) -> dict[str, list[int]]:
    """The seeds of each task the study runs, in its order: the classic tasks, then the suite."""
    seeds = {"multiply": study["multiply_seeds"], "mnist": study["mnist_seeds"]}
    for task in study.get("tasks") or []:
        seeds[task] = study["task_seeds"]
    return {task: list(task_seeds) for task, task_seeds in seeds.items() if task_seeds}


def load_study(study: dict[str, Any], root: Path = STUDY_DIR) -> list[Run]:
    """Every run the study lists, in its order: tasks, then protocols, cells and seeds."""
    return [
        load_run(task, protocol, cell, seed, root)
        for task, task_seeds in study_seeds(study).items()
        for protocol in study["protocols"]
        for cell in study["cells"]
        for seed in task_seeds
    ]


def group_runs(runs: list[Run], *fields: str) -> dict[tuple[Any, ...], list[Run]]:
    """The runs by their values of `fields` (e.g. "task", "protocol"), in the study's order."""
    groups: dict[tuple[Any, ...], list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(getattr(run, f) for f in fields), []).append(run)
    return groups


def epoch_curve(metrics_csv: Path, column: str) -> list[tuple[int, float]]:
    """(epoch, value) of one train/ or val/ column of Lightning's CSV log."""
    return sorted(read_epoch_curves(metrics_csv).get(column, {}).items())
