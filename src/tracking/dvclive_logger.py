"""DVCLive for seqlab runs (`logger=dvclive`), in its own module so dvclive loads only when used.

DVCLive on its own runs `dvc init` (and `git add`) in the enclosing git repository when it finds
no DVC project. seqlab's logger never does: inside a DVC project, or under `dvc exp run`, it is
DVCLive as usual; outside one it only writes its files (metrics, params, plots) to the run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dvclive import Live
from dvclive.lightning import DVCLiveLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment


def inside_dvc_project() -> bool:
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    if os.environ.get("DVC_ROOT"):
        return True
    try:
        Repo.find_root()
    except NotDvcRepoError:
        return False
    return True


class FilesOnlyOutsideDvcLive(Live):
    def _init_dvc(self) -> None:
        if inside_dvc_project():
            super()._init_dvc()
            return
        self._dvc_file = self._init_dvc_file()
        self._save_dvc_exp = False


class RunDVCLiveLogger(DVCLiveLogger):
    """DVCLive into `<run_dir>/<dirname>`; a resumed run appends to its history."""

    def __init__(
        self, save_dir: str, dirname: str, resume_step: int | None = None, **options: Any
    ) -> None:
        resume = resume_step is not None
        super().__init__(dir=str(Path(save_dir) / dirname), resume=resume, **options)

    @property
    @rank_zero_experiment
    def experiment(self) -> Live:
        if self._experiment is None:
            self._experiment = FilesOnlyOutsideDvcLive(**self._kwargs)
        return self._experiment
