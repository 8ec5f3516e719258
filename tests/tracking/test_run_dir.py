"""One run per directory, always: a run directory is claimed before anything is written in it,
and a directory whose run died before its first checkpoint is no dead end."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from src.tracking.run_dir import LOCK_FILE
from tests.conftest import QUICK, REPO, run_command

ARGS = [*QUICK, "trainer.enable_progress_bar=false", "~callbacks.model_summary"]


def test_a_directory_another_run_holds_is_refused_and_left_alone(tmp_path: Path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a run in another process holds it
    try:
        done = run_command("src.train", *ARGS, f"paths.run_dir={run_dir}")
    finally:
        os.close(fd)
    assert done.returncode == 2
    assert f"{run_dir} is in use by another run right now" in done.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE]


def test_a_directory_whose_run_died_before_its_first_checkpoint_is_started_again(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("seed: 1\n")  # what a run killed at once leaves
    done = run_command("src.train", *ARGS, f"paths.run_dir={run_dir}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "stopped before its first checkpoint; starting it again there" in done.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 2


@pytest.mark.slow
def test_of_many_runs_started_at_once_at_one_directory_exactly_one_runs(tmp_path: Path):
    run_dir = tmp_path / "shared"
    command = [sys.executable, "-m", "src.train", *ARGS, f"paths.run_dir={run_dir}"]
    processes = [
        subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(6)
    ]
    ended = [(process.wait(timeout=600), process.stderr.read().decode()) for process in processes]
    statuses = sorted(status for status, _ in ended)
    assert statuses == [0, 2, 2, 2, 2, 2], [err[-500:] for _, err in ended]
    for status, stderr in ended:
        if status == 2:
            assert "is in use by another run right now" in stderr or "already holds a run" in stderr
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 2
