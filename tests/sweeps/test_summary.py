import csv
import json
import statistics
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from src.sweeps.summary import main, summarize


def make_job(
    sweep_dir: Path,
    num: int,
    overrides: list[str],
    metrics: dict | None,
    monitor: tuple[str, str] = ("val/acc", "max"),
) -> None:
    job = sweep_dir / str(num)
    job.mkdir(parents=True)
    (job / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    config = {"data": {"monitor": monitor[0], "monitor_mode": monitor[1]}, "overrides": overrides}
    (job / "config.yaml").write_text(OmegaConf.to_yaml(config))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps({"test_checkpoint": "x.ckpt", **metrics}))


MSE = ("val/mse", "min")


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def sweep(tmp_path) -> Path:
    accuracies = {("lstm", 1): 0.90, ("lstm", 2): 0.94, ("gru", 1): 0.97, ("gru", 2): 0.91}
    for num, ((model, seed), acc) in enumerate(accuracies.items()):
        overrides = [f"model={model}", f"seed={seed}", "data=mnist"]
        make_job(tmp_path, num, overrides, {"test/acc": acc - 0.01, "best_val/acc": acc})
    make_job(tmp_path, 10, ["model=rnn", "seed=1", "data=mnist"], None)  # failed: no metrics
    return tmp_path


def test_every_job_is_a_row_in_job_order_failed_ones_included(sweep):
    summarize(sweep)
    table = rows(sweep / "sweep_summary.csv")
    assert [r["job"] for r in table] == ["0", "1", "2", "3", "10"]
    assert (table[-1]["status"], table[-1]["reason"]) == (
        "incomplete",
        "no metrics.json: killed, or still running",
    )
    assert table[2]["model"] == "gru" and float(table[2]["best_val/acc"]) == 0.97
    assert "test_checkpoint" not in table[0]  # only numbers


def test_the_grouped_view_gives_mean_and_spread_over_seeds(sweep):
    summarize(sweep)
    grouped = {g["model"]: g for g in rows(sweep / "sweep_summary_grouped.csv")}
    assert set(grouped) == {"lstm", "gru"}  # the failed rnn job has nothing to average
    assert grouped["gru"]["jobs"] == "2" and "seed" not in grouped["gru"]
    gru = grouped["gru"]
    assert float(gru["best_val/acc mean"]) == pytest.approx(0.94)
    assert float(gru["best_val/acc std"]) == pytest.approx(statistics.stdev([0.97, 0.91]))
    markdown = (sweep / "sweep_summary.md").read_text()
    assert "Overrides of every job: `data=mnist`" in markdown
    assert "| gru | 2 | 0.94 ± 0.0424264 | 0.93 ± 0.0424264 |" in markdown


def test_the_best_job_follows_the_monitor_mode(sweep, capsys):
    assert main([str(sweep)]) == 0
    assert "best job 2: best_val/acc = 0.97" in capsys.readouterr().out
    assert OmegaConf.load(sweep / "best_overrides.yaml")[:2] == ["model=gru", "seed=1"]
    assert "model=gru" in OmegaConf.load(sweep / "best_config.yaml").overrides


def test_no_best_job_is_named_across_different_monitored_metrics(tmp_path):
    make_job(tmp_path, 0, ["data=mnist"], {"best_val/acc": 0.9})
    make_job(tmp_path, 1, ["data=multiply"], {"best_val/mse": 0.01}, monitor=("val/mse", "min"))
    assert summarize(tmp_path)[1] is None
    assert not (tmp_path / "best_config.yaml").exists()
    assert len(rows(tmp_path / "sweep_summary.csv")) == 2


def test_a_directory_without_jobs_is_an_error(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no job directories" in capsys.readouterr().err


def test_with_seed_replicates_the_best_setting_is_the_best_mean_not_the_luckiest_seed(tmp_path):
    # lstm has the single best seed, gru the better mean; an rnn seed that failed rules it out.
    losses = {("lstm", 1): 0.004, ("lstm", 2): 0.050, ("gru", 1): 0.010, ("gru", 2): 0.012}
    for num, ((model, seed), loss) in enumerate(losses.items()):
        make_job(tmp_path, num, [f"model={model}", f"seed={seed}"], {"best_val/mse": loss}, MSE)
    make_job(tmp_path, 4, ["model=rnn", "seed=1"], {"best_val/mse": 0.001}, MSE)
    make_job(tmp_path, 5, ["model=rnn", "seed=2"], None, MSE)  # failed

    best = summarize(tmp_path)[1]

    assert best is not None
    assert best.mean == pytest.approx(0.011)
    assert [job.name for job in best.replicates] == ["2", "3"]
    assert best.job.name == "2"
    assert OmegaConf.load(tmp_path / "best_overrides.yaml") == ["model=gru", "seed=1"]
    markdown = (tmp_path / "sweep_summary.md").read_text()
    assert "model=gru, best_val/mse = 0.011 (min) over jobs 2, 3" in markdown


def test_without_replicates_the_best_job_is_the_best_single_run(tmp_path):
    for num, (model, loss) in enumerate({"lstm": 0.004, "gru": 0.010}.items()):
        make_job(tmp_path, num, [f"model={model}", "seed=1"], {"best_val/mse": loss}, MSE)
    best = summarize(tmp_path)[1]
    assert best is not None and best.job.name == "0" and best.mean is None
