import csv
import os
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class
from omegaconf import OmegaConf

from src.config.checks import check_sweep
from src.config.errors import ConfigError
from src.sweeps.summary import main as sweep_summary_main
from tests.conftest import QUICK, command, run_cli, run_command

TINY = [
    *QUICK,
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "~callbacks.model_summary",
]


def run_sweep(output_dir: Path, *overrides: str, own_process: bool = False) -> tuple[str, Path]:
    """Run a multirun of the command (in this process, unless `own_process`); its stdout and
    its one sweep directory."""
    args = ["-m", *TINY, *overrides, f"paths.output_dir={output_dir}"]
    result = run_cli(*args) if own_process else run_command("src.train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (output_dir / "multirun").iterdir()
    return result.stdout, sweep_dir


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def compose_with_hydra(*overrides: str):
    return command("train", *overrides, with_hydra=True)


@pytest.mark.slow
def test_a_2x2_grid_sweep_ends_with_its_summary_table(tmp_path):
    stdout, sweep_dir = run_sweep(tmp_path, "model=rnn,gru", "seed=1,2", "num_threads=1")
    rows = read_csv(sweep_dir / "sweep_summary.csv")
    assert [(r["job"], r["model"], r["seed"]) for r in rows] == [
        ("0", "rnn", "1"),
        ("1", "rnn", "2"),
        ("2", "gru", "1"),
        ("3", "gru", "2"),
    ]
    assert all(r["status"] == "done" and float(r["test/mse"]) > 0 for r in rows)
    grouped = read_csv(sweep_dir / "sweep_summary_grouped.csv")
    assert [(g["model"], g["jobs"]) for g in grouped] == [("rnn", "2"), ("gru", "2")]
    rnn_mse = [float(r["test/mse"]) for r in rows if r["model"] == "rnn"]
    assert float(grouped[0]["test/mse mean"]) == pytest.approx(sum(rnn_mse) / 2)
    assert "| rnn | 2 |" in (sweep_dir / "sweep_summary.md").read_text()

    best = min(rows, key=lambda r: float(r["best_val/mse"]))
    best_config = OmegaConf.load(sweep_dir / "best_config.yaml")
    assert (best_config.model.cell, best_config.seed) == (best["model"], int(best["seed"]))
    assert f"best job {best['job']}" in stdout

    # The entry point rebuilds the same table for an existing sweep directory.
    table = (sweep_dir / "sweep_summary.csv").read_text()
    (sweep_dir / "sweep_summary.csv").unlink()
    assert sweep_summary_main([str(sweep_dir)]) == 0
    assert (sweep_dir / "sweep_summary.csv").read_text() == table


@pytest.mark.slow
def test_an_optuna_search_of_3_trials_saves_the_best_config(tmp_path):
    _, sweep_dir = run_sweep(
        tmp_path, "hparams_search=multiply_optuna", "hydra.sweeper.n_trials=3", "num_threads=1"
    )
    rows = read_csv(sweep_dir / "sweep_summary.csv")
    assert len(rows) == 3 and all(r["status"] == "done" for r in rows)
    # The trials really differ: the sampler proposed the search space, not the defaults.
    assert len({r["optimizer.lr"] for r in rows}) == 3

    optuna_result = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert optuna_result.best_value == pytest.approx(min(float(r["best_val/mse"]) for r in rows))
    best_overrides = OmegaConf.load(sweep_dir / "best_overrides.yaml")
    for key, value in optuna_result.best_params.items():
        assert f"{key}={value}" in best_overrides
    best_config = OmegaConf.load(sweep_dir / "best_config.yaml")
    assert best_config.optimizer.lr == pytest.approx(optuna_result.best_params["optimizer.lr"])
    assert best_config.model.hidden_size == optuna_result.best_params["model.hidden_size"]


@pytest.fixture
def as_hydra_job():
    """Make a composed config the current Hydra job's, as `python -m src.train` would."""

    def _set(*overrides: str):
        cfg = compose_with_hydra(*overrides)
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield _set
    HydraConfig.instance().cfg = None


def test_an_optuna_search_the_wrong_way_is_refused(as_hydra_job):
    cfg = as_hydra_job("hparams_search=multiply_optuna", "hydra.sweeper.direction=maximize")
    with pytest.raises(ConfigError, match=r"hydra\.sweeper\.direction=minimize"):
        check_sweep(cfg)
    check_sweep(as_hydra_job("hparams_search=mnist_optuna"))


@pytest.mark.parametrize(
    ("preset", "metric", "direction"),
    [("multiply_optuna", "val/mse", "minimize"), ("mnist_optuna", "val/acc", "maximize")],
)
def test_each_task_has_an_optuna_preset_that_optimizes_its_monitor(preset, metric, direction):
    cfg = compose_with_hydra(f"hparams_search={preset}")
    assert cfg.data.monitor == cfg.optimized_metric == metric
    sweeper = cfg.hydra.sweeper
    assert (sweeper.direction, cfg.hydra.mode.name) == (direction, "MULTIRUN")
    assert sweeper.sampler.seed is not None
    tuned = {"optimizer.lr", "model.hidden_size", "model.num_layers", "model.dropout"}
    assert tuned | {"data.batch_size"} <= set(sweeper.params)


@pytest.mark.slow
def test_the_parallel_launcher_runs_2_jobs_at_once_into_their_own_directories(tmp_path):
    _, sweep_dir = run_sweep(
        tmp_path,
        "hydra/launcher=parallel",
        "seed=1,2",
        "trainer.max_epochs=15",
        "num_threads=null",  # each job takes its share of the cores
        own_process=True,
    )
    jobs = [sweep_dir / "0", sweep_dir / "1"]
    spans = []
    for job in jobs:
        assert (job / "metrics.json").exists() and (job / "checkpoints" / "best.ckpt").exists()
        assert OmegaConf.load(job / "config.yaml").seed == int(job.name) + 1
        started, finished = (job / "config.yaml").stat(), (job / "metrics.json").stat()
        spans.append((started.st_mtime, finished.st_mtime))
    # Both started (config written) before either finished (metrics written): in parallel.
    # (The jobs last a few seconds, far longer than the workers take to start one after the other.)
    assert max(start for start, _ in spans) < min(end for _, end in spans)
    cores = len(os.sched_getaffinity(0))
    assert f"({max(1, cores // 2)} torch threads)" in (jobs[0] / "train.log").read_text()
    assert len(read_csv(sweep_dir / "sweep_summary.csv")) == 2


def test_the_slurm_preset_composes_one_task_per_device():
    cfg = compose_with_hydra("hydra/launcher=slurm", "trainer=ddp_multinode")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    single = compose_with_hydra("hydra/launcher=slurm", "trainer=gpu").hydra.launcher
    assert (single.nodes, single.tasks_per_node) == (1, 1)
    assert get_class(launcher._target_).__name__ == "SlurmLauncher"
