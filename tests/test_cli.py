"""The commands as a user types them, each in a process of its own: a handful of smoke tests
(everything else calls the same code in-process)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import QUICK, REPO, run_cli

HEAVY = ("torch", "lightning", "wandb", "dvclive", "matplotlib", "optuna", "dvc")


def modules_loaded_by(*argv: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run src.train's command with `argv` and report which heavy packages it imported."""
    script = (
        "import sys\n"
        f"sys.argv = ['src/train.py', *{list(argv)!r}]\n"
        "import src.train\n"
        "try:\n"
        "    src.train.cli()\n"
        "except SystemExit as done:\n"
        "    code = done.code\n"
        "else:\n"
        "    code = 0\n"
        f"print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    (line,) = (line for line in done.stdout.splitlines() if line.startswith("LOADED"))
    return done, set(eval(line.removeprefix("LOADED ")))


@pytest.mark.parametrize(
    ("argv", "status"),
    [(["--help"], 0), (["--cfg", "job"], 0), (["model.hiden_size=3"], 1), (["seed=-1"], 2)],
    ids=["help", "cfg-job", "refused-override", "refused-value"],
)
def test_help_the_config_and_refusals_answer_without_the_training_stack(argv, status):
    done, loaded = modules_loaded_by(*argv)
    assert done.returncode == status, done.stderr[-2000:]
    assert loaded == set()
    assert "Traceback" not in done.stderr


def test_help_describes_the_commands_and_every_group():
    done = run_cli("--help")
    assert done.returncode == 0
    assert "python -m src.train" in done.stdout and "src/training" in done.stdout
    for group in ("data", "model", "trainer", "logger", "profile", "experiment"):
        assert f"\n  {group} " in done.stdout


@pytest.mark.skipif(shutil.which("seqlab-train") is None, reason="the package is not installed")
def test_the_console_script_runs_the_same_command():
    done = subprocess.run(
        ["seqlab-train", "model=lstm", "--cfg", "job"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "cell: lstm" in done.stdout


@pytest.mark.slow
def test_a_quick_run_from_the_command_line_leaves_its_metrics(tmp_path: Path):
    done = run_cli(
        *QUICK,
        "model=rnn",
        f"paths.run_dir={tmp_path / 'run'}",
        f"paths.data_dir={tmp_path / 'data'}",
        "trainer.enable_progress_bar=false",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and 0 <= metrics["test/tolerance_accuracy"] <= 1
    assert "test/tolerance_accuracy" in done.stdout  # the summary at the end
    log = (tmp_path / "run" / "train.log").read_text()
    assert "lightning.pytorch" in log  # Lightning's own lines reach the run's log
    assert "test/tolerance_accuracy" in log and "tested checkpoint" in log
