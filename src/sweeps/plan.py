"""What a sweep was asked to run, written into its directory before the first job starts.

    <sweep dir>/sweep_plan.yaml    the command and its arguments, the sweeper, and the jobs

The summary reads it to list the jobs that never started (a sweep stopped by Ctrl+C, or by
`sweep.fail_fast`), and `python -m src.sweeps.rerun` to launch the same sweep again. The jobs of
a grid (Hydra's basic sweeper, whatever the launcher) are known in advance, each with its
overrides, in the order Hydra numbers them; an Optuna study knows only how many trials it runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

# Private, but the one place Hydra expands a grid: the plan numbers jobs exactly as it does.
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from src.atomic import atomic_write_text

PLAN_FILE = "sweep_plan.yaml"


@dataclass(frozen=True)
class SweepPlan:
    # The module run (`src.train`) and its arguments, as given on the command line.
    command: str
    argv: list[str]
    sweeper: str
    # How many jobs the sweep runs, and each one's overrides where they are known in advance.
    planned: int | None
    jobs: list[list[str]] | None = field(default=None)


def grid_jobs(task_overrides: list[str], sweeper_params: dict[str, str]) -> list[list[str]]:
    """The jobs of Hydra's basic sweeper, numbered as it numbers them: its own expansion."""
    arguments = [f"{key}={value}" for key, value in sweeper_params.items()] + task_overrides
    overrides = OverridesParser.create().parse_overrides(arguments)
    (batch,) = BasicSweeper.split_arguments(overrides, max_batch_size=None)
    return [list(job) for job in batch]


def make_plan(config: DictConfig, command: str, argv: list[str]) -> SweepPlan:
    sweeper = config.hydra.sweeper
    target = str(sweeper.get("_target_", ""))
    task_overrides = list(config.hydra.overrides.task)
    if target.endswith("BasicSweeper"):
        try:
            params = sweeper.get("params")
            swept = {str(k): str(v) for k, v in params.items()} if params else {}
            jobs = grid_jobs(task_overrides, swept)
        except HydraException:  # a sweep Hydra itself expands (glob): count as it goes
            return SweepPlan(command, argv, "basic", None)
        return SweepPlan(command, argv, "basic", len(jobs), jobs)
    if "optuna" in target.lower():
        return SweepPlan(command, argv, "optuna", int(sweeper.n_trials))
    return SweepPlan(command, argv, target.rsplit(".", 1)[-1] or "unknown", None)


def write_plan(sweep_dir: Path, plan: SweepPlan) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sweep_dir / PLAN_FILE, OmegaConf.to_yaml(asdict(plan)))


def read_plan(sweep_dir: Path) -> SweepPlan | None:
    path = sweep_dir / PLAN_FILE
    if not path.is_file():
        return None
    content = OmegaConf.to_container(OmegaConf.load(path))
    assert isinstance(content, dict)
    return SweepPlan(
        command=str(content["command"]),
        argv=[str(arg) for arg in content["argv"]],
        sweeper=str(content["sweeper"]),
        planned=content.get("planned"),
        jobs=content.get("jobs"),
    )
