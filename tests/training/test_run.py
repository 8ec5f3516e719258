import csv
import json
from pathlib import Path

import pytest
import torch

from src.config.errors import ConfigError
from src.training.run import train
from tests.conftest import QUICK


@pytest.mark.parametrize("model", ["rnn", "lstm", "gru"])
def test_fast_dev_run_of_every_model(compose_cfg, model):
    cfg = compose_cfg(f"model={model}", "debug=fast_dev_run", *QUICK)
    results = train(cfg)
    assert 0.0 <= results["test/tolerance_accuracy"] <= 1.0
    assert results["num_params"] > 0


def test_a_run_leaves_config_curves_checkpoints_and_metrics(compose_cfg, tmp_path):
    cfg = compose_cfg("model=lstm", "trainer.max_epochs=2", *QUICK)
    results = train(cfg)
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    assert "lstm-multiply" in run_dir.name
    assert (run_dir / "config.yaml").read_text().count("cell: lstm") == 1
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    lines = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    assert "val/mse" in lines[0] and "train/loss" in lines[0]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    assert metrics["test/mse"] == pytest.approx(results["test/mse"])
    checkpoint = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["model"]["cell"] == "lstm"


def test_runs_started_together_get_their_own_directories(compose_cfg, tmp_path):
    for _ in range(2):
        train(compose_cfg("debug=fast_dev_run", *QUICK))
    assert len(list((tmp_path / "outputs" / "runs").iterdir())) == 2


def test_fixed_run_dir_is_used_as_given(compose_cfg, tmp_path):
    run_dir = tmp_path / "fixed"
    train(compose_cfg(f"paths.run_dir={run_dir}", "debug=fast_dev_run", *QUICK))
    assert (run_dir / "metrics.json").exists()


@pytest.mark.slow
def test_a_small_gru_learns_the_multiplication_problem(compose_cfg):
    # Predicting the mean target gives MSE ~0.049; a GRU that learns gets far below it.
    cfg = compose_cfg(
        "model=gru",
        "model.hidden_size=16",
        "data.seq_len=10",
        "data.num_sequences=1500",
        "data.num_fit=1250",
        "optimizer.lr=0.01",
        "trainer.max_epochs=10",
        "num_threads=1",
    )
    results = train(cfg)
    assert results["test/mse"] < 0.005
    assert results["test/tolerance_accuracy"] > 0.6


def test_scheduler_and_gradient_clipping_come_from_config(compose_cfg, tmp_path):
    cfg = compose_cfg(
        "scheduler=cosine", "trainer.gradient_clip_val=0.5", "trainer.max_epochs=3", *QUICK
    )
    train(cfg)
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    rows = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    column = rows[0].split(",").index("lr-Adam")
    rates = [float(row.split(",")[column]) for row in rows[1:] if row.split(",")[column]]
    assert rates[0] == pytest.approx(1e-3)
    assert rates == sorted(rates, reverse=True) and rates[-1] < rates[0]


@pytest.mark.slow
def test_overfitting_a_few_batches_drives_the_training_loss_down(compose_cfg):
    cfg = compose_cfg("debug=overfit", "trainer.max_epochs=30", "optimizer.lr=0.01", *QUICK)
    results = train(cfg)
    (run_dir,) = (Path(cfg.paths.output_dir) / "runs").iterdir()
    with (run_dir / "csv" / "metrics.csv").open() as handle:
        losses = [float(row["train/loss"]) for row in csv.DictReader(handle) if row["train/loss"]]
    assert len(losses) == 30 and losses[-1] < 0.2 * losses[0]
    assert results["epochs"] == 30


@pytest.mark.parametrize("precision", ["32-true", "64-true", "bf16-true", "bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("model", ["gru", "lstm"])
def test_every_precision_trains_tests_and_plots_end_to_end(compose_cfg, tmp_path, model, precision):
    run_dir = tmp_path / "run"
    cfg = compose_cfg(
        f"model={model}", f"trainer.precision={precision}", f"paths.run_dir={run_dir}", *QUICK
    )
    results = train(cfg)
    assert 0 <= results["test/tolerance_accuracy"] <= 1
    assert (run_dir / "predictions.png").stat().st_size > 0
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 2


def test_float16_weights_are_refused_at_start_with_what_to_use(compose_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"trainer\.precision=bf16-mixed"):
        train(compose_cfg("trainer.precision=16-true", *QUICK))
    assert not (tmp_path / "outputs").exists()
