"""Sweeps outlive their failed jobs: every launcher goes on, the summary lists every job with
its status, the exit status says a job failed, and one command runs the failed ones again."""

import csv
import json
import signal
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from src.sweeps.jobs import FailedJob
from src.sweeps.rerun import rerun_argv
from src.sweeps.summary import main as summary_main
from tests.conftest import QUICK, run_cli, run_command

TINY = [*QUICK, "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "num_threads=1"]


def sweep(output_dir: Path, *overrides: str, own_process: bool = False):
    """A multirun of src.train; what it printed and its sweep directory."""
    args = ["-m", *TINY, *overrides, f"paths.output_dir={output_dir}"]
    done = run_cli(*args) if own_process else run_command("src.train", *args)
    (sweep_dir,) = (output_dir / "multirun").iterdir()
    return done, sweep_dir


def statuses(sweep_dir: Path) -> dict[str, tuple[str, str]]:
    with (sweep_dir / "sweep_summary.csv").open() as handle:
        return {row["job"]: (row["status"], row["reason"]) for row in csv.DictReader(handle)}


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def signal_once(signum: int, marker: Path) -> list[str]:
    """A real signal in call 1 (batches 2 and 3) of the first job that gets there, and in no
    other job."""
    return [
        "steps_per_call=2",
        "+callbacks.stop._target_=tests.conftest.SignalAtBatch",
        "+callbacks.stop.epoch=0",
        "+callbacks.stop.batch=1",
        f"+callbacks.stop.signum={signum}",
        f"+callbacks.stop.marker={marker}",
    ]


@pytest.mark.slow
def test_refused_and_diverging_jobs_are_recorded_and_the_sweep_goes_on(tmp_path):
    # Jobs: 0 (lr 1e10, no units) refused, 1 (lr 1e10) diverges, 2 refused, 3 trains.
    done, sweep_dir = sweep(
        tmp_path, "optimizer=sgd", "optimizer.lr=1e10,0.01", "model.hidden_size=0,8"
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert statuses(sweep_dir) == {
        "0": ("failed", "refused config"),
        "1": ("failed", "diverged"),
        "2": ("failed", "refused config"),
        "3": ("done", ""),
    }
    assert last_line(done.stderr).startswith(
        "seqlab: 3 of 4 jobs failed (2 refused config, 1 diverged); "
        f"logs: {sweep_dir}/{{0,1,2}}/train.log;"
    )
    assert f"python -m src.sweeps.rerun {sweep_dir}" in last_line(done.stderr)
    record = json.loads((sweep_dir / "1" / "failure.json").read_text())
    assert (record["job"], record["status"]) == (1, 1) and "diverged" in record["message"]
    assert "optimizer.lr=10000000000.0" in record["overrides"]  # as Hydra writes 1e10
    assert "model.hidden_size=0 is not allowed" in (sweep_dir / "0" / "train.log").read_text()
    markdown = (sweep_dir / "sweep_summary.md").read_text()
    assert "| 1 | failed: diverged | 10000000000.0 | 8 |" in markdown
    assert "- job 0 (refused config): model.hidden_size=0 is not allowed" in markdown

    # The rerun keeps the job that finished and runs the three others, which fail again.
    finished = (sweep_dir / "3" / "metrics.json").stat().st_mtime_ns
    again = run_command("src.sweeps.rerun", str(sweep_dir))
    assert again.returncode == 1
    assert (sweep_dir / "3" / "metrics.json").stat().st_mtime_ns == finished
    assert statuses(sweep_dir)["1"] == ("failed", "diverged")
    assert last_line(again.stderr).startswith("seqlab: 3 of 4 jobs failed")


def test_fail_fast_stops_at_the_first_failure_and_the_rest_never_start(tmp_path, capsys):
    done, sweep_dir = sweep(tmp_path, "sweep.fail_fast=true", "model.hidden_size=0,8,16")
    assert done.returncode == 2
    assert statuses(sweep_dir) == {
        "0": ("failed", "refused config"),
        "1": ("never started", ""),
        "2": ("never started", ""),
    }
    assert last_line(done.stderr).startswith(
        "seqlab: 1 of 3 jobs failed (1 refused config), 2 never started;"
    )
    # Written again by hand, the summary still lists the refused job and the two that never ran.
    (sweep_dir / "sweep_summary.csv").unlink()
    assert summary_main([str(sweep_dir)]) == 0
    assert statuses(sweep_dir)["2"] == ("never started", "")
    with (sweep_dir / "sweep_summary.csv").open() as handle:
        assert [row["model.hidden_size"] for row in csv.DictReader(handle)] == ["0", "8", "16"]


@pytest.mark.slow
def test_ctrl_c_stops_the_sweep_and_one_command_finishes_it(tmp_path):
    done, sweep_dir = sweep(
        tmp_path, "seed=1,2,3", *signal_once(signal.SIGINT, tmp_path / "signalled")
    )
    assert done.returncode == 130, done.stderr[-2000:]
    assert statuses(sweep_dir) == {
        "0": ("failed", "signal SIGINT"),
        "1": ("never started", ""),
        "2": ("never started", ""),
    }
    assert (sweep_dir / "0" / "checkpoints" / "last.ckpt").is_file()
    assert "1 of 3 jobs failed (1 signal SIGINT), 2 never started" in done.stderr

    again = run_command("src.sweeps.rerun", str(sweep_dir))
    assert again.returncode == 0, again.stderr[-2000:]
    assert statuses(sweep_dir) == {str(n): ("done", "") for n in range(3)}
    assert "job 0 resumes from its last checkpoint" in again.stdout
    assert not (sweep_dir / "0" / "failure.json").exists()
    seeds = [OmegaConf.load(sweep_dir / str(n) / "config.yaml").seed for n in range(3)]
    assert seeds == [1, 2, 3]


@pytest.mark.slow
def test_a_failed_optuna_trial_is_marked_failed_and_never_the_best(tmp_path):
    done, sweep_dir = sweep(
        tmp_path,
        "hparams_search=multiply_optuna",
        "hydra.sweeper.n_trials=4",
        # No units in some trials, which are then refused.
        "hydra.sweeper.params={model.hidden_size:'choice(0,8)',optimizer.lr:'interval(1e-3,1e-2)'}",
    )
    assert done.returncode == 1, done.stderr[-2000:]
    with (sweep_dir / "sweep_summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4  # the study went on after its failed trials
    failed = [row for row in rows if row["status"] == "failed"]
    finished = [row for row in rows if row["status"] == "done"]
    assert failed and finished
    assert {row["model.hidden_size"] for row in failed} == {"0"}
    assert "Failed experiment: " in done.stdout + done.stderr  # Optuna's own word: trial FAIL
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert best.best_params["model.hidden_size"] == 8
    assert best.best_value == pytest.approx(min(float(r["best_val/mse"]) for r in finished))


@pytest.mark.slow
def test_a_job_signalled_in_a_worker_of_the_parallel_launcher_fails_alone(tmp_path):
    done, sweep_dir = sweep(
        tmp_path,
        "hydra/launcher=parallel",
        "seed=1,2,3",
        *signal_once(signal.SIGTERM, tmp_path / "signalled"),
        own_process=True,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    found = sorted(statuses(sweep_dir).values())
    assert found == [("done", ""), ("done", ""), ("failed", "signal SIGTERM")]
    assert last_line(done.stderr).startswith("seqlab: 1 of 3 jobs failed (1 signal SIGTERM);")


@pytest.mark.slow
def test_a_refused_job_under_submitit_goes_on_as_on_slurm(tmp_path):
    # submitit's local executor: each job is pickled into a process of its own and its result
    # read back, as the SLURM launcher does on a cluster.
    done, sweep_dir = sweep(
        tmp_path,
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "model.hidden_size=0,8",
        own_process=True,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert statuses(sweep_dir) == {"0": ("failed", "refused config"), "1": ("done", "")}


def test_a_new_sweep_into_the_directory_of_finished_jobs_is_refused_not_written_over(tmp_path):
    first, sweep_dir = sweep(tmp_path, "seed=1")
    assert first.returncode == 0
    finished = (sweep_dir / "0" / "metrics.json").read_bytes()
    plan = (sweep_dir / "sweep_plan.yaml").read_bytes()
    again = run_command("src.train", "-m", *TINY, "seed=2", f"hydra.sweep.dir={sweep_dir}")
    assert again.returncode == 2
    assert f"{sweep_dir} holds an earlier sweep" in again.stderr
    assert f"python -m src.sweeps.rerun {sweep_dir}`" in again.stderr
    assert (sweep_dir / "0" / "metrics.json").read_bytes() == finished
    assert (sweep_dir / "sweep_plan.yaml").read_bytes() == plan
    # A sweep directory from before plans were kept: each finished job is refused on its own.
    (sweep_dir / "sweep_plan.yaml").unlink()
    again = run_command("src.train", "-m", *TINY, "seed=2", f"hydra.sweep.dir={sweep_dir}")
    assert again.returncode == 1
    assert "holds a job of an earlier sweep" in again.stderr
    assert (sweep_dir / "0" / "metrics.json").read_bytes() == finished


def test_a_rerun_cannot_change_what_the_sweep_sweeps(tmp_path):
    _, sweep_dir = sweep(tmp_path, "sweep.fail_fast=true", "model.hidden_size=0,8")
    done = run_command("src.sweeps.rerun", str(sweep_dir), "model.hidden_size=4")
    assert done.returncode == 2
    assert "model.hidden_size is swept by this sweep" in done.stderr
    missing = run_command("src.sweeps.rerun", str(tmp_path))
    assert missing.returncode == 2 and "sweep_plan.yaml" in missing.stderr


def test_the_rerun_keeps_the_sweep_directory_and_adds_overrides():
    argv = rerun_argv(["-m", "seed=1,2", "hydra.sweep.dir=old"], Path("new"), ["x=1"])
    assert argv == ["-m", "seed=1,2", "x=1", "hydra.sweep.dir=new"]


def test_a_failed_job_is_no_number_to_optuna():
    with pytest.raises(ValueError, match=r"job 3 failed \(diverged\)"):
        float(FailedJob(3, "diverged"))


def test_a_crashing_job_leaves_its_traceback_in_its_log_and_the_sweep_goes_on(tmp_path):
    crash = [
        "+callbacks.crash._target_=tests.conftest.InterruptAtEpoch",
        "+callbacks.crash.epoch=0",
    ]
    done, sweep_dir = sweep(tmp_path, "seed=1,2", *crash)
    assert done.returncode == 1
    assert statuses(sweep_dir) == {"0": ("failed", "crashed"), "1": ("failed", "crashed")}
    assert "Traceback" not in done.stderr
    assert "seqlab: job 1 crashed: Interrupted: interrupted at the start of epoch 0" in done.stderr
    log = (sweep_dir / "0" / "train.log").read_text()
    assert "Traceback (most recent call last)" in log and "InterruptAtEpoch" not in done.stderr
