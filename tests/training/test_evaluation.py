import csv
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from src.config.errors import ConfigError
from src.training.evaluation import evaluate
from src.training.evaluation import write_predictions as predict
from src.training.run import train
from tests.conftest import CONF, QUICK, run_command, write_fake_mnist


def command(name: str, *overrides: str):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(name, overrides=list(overrides))


@pytest.fixture
def trained_run(compose_cfg, tmp_path) -> Path:
    run_dir = tmp_path / "run"
    train(compose_cfg("trainer.max_epochs=2", f"paths.run_dir={run_dir}", *QUICK))
    return run_dir


def test_eval_reproduces_the_test_metrics_training_reported(trained_run):
    trained = json.loads((trained_run / "metrics.json").read_text())
    overrides = [f"ckpt_path={trained['test_checkpoint']}", "num_threads=1"]
    results = evaluate(command("eval", *overrides), overrides)
    for key in ("test/mse", "test/mae", "test/tolerance_accuracy", "test/loss"):
        assert results[key] == trained[key], key
    written = json.loads((trained_run / "eval" / "best-test" / "metrics.json").read_text())
    assert written == results


def test_eval_of_another_split_or_fresh_data_follows_the_overrides(trained_run):
    on_val = ["ckpt_path=best", f"paths.run_dir={trained_run}", "split=val"]
    assert "val/mse" in evaluate(command("eval", *on_val), on_val)
    fresh = ["ckpt_path=best", f"paths.run_dir={trained_run}", "data.seed=7"]
    results = evaluate(command("eval", *fresh), fresh)
    trained = json.loads((trained_run / "metrics.json").read_text())
    assert results["test/mse"] != trained["test/mse"]
    assert results["overrides"] == [f"paths.run_dir={trained_run}", "data.seed=7"]


def test_predict_writes_one_row_per_test_sample(trained_run):
    overrides = ["ckpt_path=best", f"paths.run_dir={trained_run}"]
    path = predict(command("predict", *overrides), overrides)
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 300 - 250
    assert list(rows[0]) == ["index", "target", "prediction", "abs_error"]
    within = [abs(float(r["prediction"]) - float(r["target"])) <= 0.04 for r in rows]
    trained = json.loads((trained_run / "metrics.json").read_text())
    assert sum(within) / len(rows) == pytest.approx(trained["test/tolerance_accuracy"])


def test_mnist_run_plots_and_predicts_its_test_digits(compose_cfg, tmp_path):
    mirror = tmp_path / "mirror"
    checksums = write_fake_mnist(mirror)
    run_dir = tmp_path / "mnist"
    cfg = compose_cfg(
        "data=mnist",
        f"data.local_mirror={mirror}",
        "data.val_size=50",
        "data.batch_size=50",
        "model.hidden_size=16",
        "trainer.max_epochs=1",
        "num_threads=1",
        f"paths.run_dir={run_dir}",
    )
    with open_dict(cfg):
        cfg.data.checksums = checksums
    results = train(cfg)
    for plot in ("learning_curves.png", "confusion_matrix.png", "misclassified.png"):
        assert (run_dir / plot).stat().st_size > 1000, plot

    overrides = ["ckpt_path=best", f"paths.run_dir={run_dir}"]
    with (predict(command("predict", *overrides), overrides)).open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 100
    assert list(rows[0])[:3] == ["index", "true_label", "predicted_label"]
    probabilities = [[float(row[f"prob_{c}"]) for c in range(10)] for row in rows]
    assert all(sum(p) == pytest.approx(1.0, abs=1e-4) for p in probabilities)
    correct = sum(row["true_label"] == row["predicted_label"] for row in rows)
    assert correct / 100 == pytest.approx(results["test/acc"])


def test_eval_without_a_checkpoint_says_how_to_give_one():
    with pytest.raises(ConfigError, match="ckpt_path is required"):
        evaluate(command("eval"), [])
    with pytest.raises(ConfigError, match=r"no checkpoint file at no/such\.ckpt"):
        evaluate(command("eval", "ckpt_path=no/such.ckpt"), ["ckpt_path=no/such.ckpt"])


def test_eval_of_a_file_that_is_no_checkpoint_ends_with_one_line_and_status_2():
    done = run_command("src.eval", "ckpt_path=README.md")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "seqlab: config error: README.md is not a readable PyTorch checkpoint."
    ]


@pytest.fixture
def pixel_mnist_run(compose_cfg, tmp_path) -> Path:
    """A run of pixel-by-pixel MNIST (784 steps), on small fake digits."""
    mirror = tmp_path / "mirror"
    checksums = write_fake_mnist(mirror)
    run_dir = tmp_path / "pixel"
    cfg = compose_cfg(
        "profile=quick",
        "experiment=mnist_pixel",
        f"data.local_mirror={mirror}",
        "data.val_size=50",
        "data.batch_size=50",
        "model.hidden_size=4",
        "trainer.max_epochs=1",
        f"paths.run_dir={run_dir}",
    )
    with open_dict(cfg):
        cfg.data.checksums = checksums
    train(cfg)
    return run_dir


def test_eval_checks_overrides_against_the_checkpoints_own_config(pixel_mnist_run):
    best = pixel_mnist_run / "checkpoints" / "best.ckpt"
    # data.val_size is an MNIST key: conf/'s default task (multiply) has none.
    done = run_command("src.eval", f"ckpt_path={best}", "data.val_size=100", "split=val")
    assert done.returncode == 0, done.stderr[-2000:]
    written = json.loads((pixel_mnist_run / "eval" / "best-val" / "metrics.json").read_text())
    # The checkpoint's own task and cell are what the command composed with.
    assert written["overrides"] == ["data.val_size=100", "split=val", "data=mnist", "model=gru"]

    # Naming the checkpoint's own task keeps its values: still 784 steps of one pixel.
    again = run_command("src.predict", f"ckpt_path={best}", "data=mnist")
    assert again.returncode == 0, again.stderr[-2000:]
    unknown = run_command("src.eval", f"ckpt_path={best}", "data.seq_len=10")
    assert unknown.returncode == 1
    assert "data has no key 'seq_len'" in unknown.stderr and "val_size" in unknown.stderr
