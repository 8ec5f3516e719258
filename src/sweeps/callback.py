"""The Hydra callback of every multirun (conf/hydra/default.yaml): the plan first, the summary
and the exit status last.

At the start it writes sweep_plan.yaml (every job the sweep is to run, and the command that runs
it again) and marks this process as the one the sweep runs in. At the end it writes the summary
and, when a job did not finish, ends the command with status 1 and a last line that counts them,
names their logs and gives the command that reruns them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from src.config.cli import running_command
from src.config.errors import CommandFailed, ConfigError, refuse
from src.sweeps.jobs import RERUN_ENV_VAR, mark_sweep_process
from src.sweeps.plan import make_plan, read_plan, write_plan
from src.sweeps.summary import DONE, finish_sweep, outcome_line


class SweepSummary(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        mark_sweep_process()
        sweep_dir = Path(config.hydra.sweep.dir)
        if read_plan(sweep_dir) is not None:
            # A rerun keeps the plan, and the command line, of the sweep as it was started.
            if os.environ.get(RERUN_ENV_VAR):
                return
            refuse(
                ConfigError(
                    f"{sweep_dir} holds an earlier sweep; this one would write over its jobs. "
                    f"Run its unfinished jobs with `python -m src.sweeps.rerun {sweep_dir}`, or "
                    "give this sweep another hydra.sweep.dir (or none, for a fresh one)."
                )
            )
        write_plan(sweep_dir, make_plan(config, running_command(), sys.argv[1:]))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = finish_sweep(sweep_dir)
        if any(job.status != DONE for job in jobs):
            raise CommandFailed(1, "failed jobs", outcome_line(sweep_dir, jobs) or "")
