import re

import pytest
from omegaconf import OmegaConf

from src.config.checks import check_config
from src.config.errors import ConfigError
from tests.conftest import run_command


@pytest.mark.parametrize("model", ["rnn", "lstm", "gru"])
def test_every_model_composes_with_the_classic_protocol(compose_cfg, model):
    cfg = compose_cfg(f"model={model}", "data=multiply")
    check_config(cfg)
    assert cfg.model.cell == model
    assert (cfg.model.hidden_size, cfg.model.num_layers) == (30, 2)
    assert (cfg.data.batch_size, cfg.trainer.max_epochs, cfg.optimizer.lr) == (32, 100, 1e-3)
    # Shapes are wired from the data config.
    assert (cfg.model.input_size, cfg.model.output_size) == (2, 1)
    OmegaConf.resolve(cfg)


def test_overrides_reach_the_model(compose_cfg):
    cfg = compose_cfg("model=rnn", "model.hidden_size=64", "model.num_layers=3")
    assert (cfg.model.hidden_size, cfg.model.num_layers) == (64, 3)


def assert_refused(cfg, key: str) -> None:
    """check_config refuses `cfg` with a message that names `key` and a fix."""
    with pytest.raises(ConfigError, match=re.escape(key)) as refused:
        check_config(cfg)
    assert "Fix: " in str(refused.value)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        # Sizes <= 0.
        (["model.hidden_size=0"], "model.hidden_size"),
        (["model.num_layers=-1"], "model.num_layers"),
        (["model.input_size=0"], "model.input_size"),
        (["model.output_size=-3"], "model.output_size"),
        # Sizes that do not fit the data: the multiplication problem has 2 features and 1 output.
        (["model.input_size=3"], "model.input_size"),
        (["model.output_size=9"], "model.output_size"),
        (["data.batch_size=0"], "data.batch_size"),
        (["data.seq_len=0"], "data.seq_len"),
        (["data.num_sequences=0"], "data.num_sequences"),
        (["data.num_fit=0"], "data.num_fit"),
        (["trainer.max_epochs=0"], "trainer.max_epochs"),
        (["trainer.min_epochs=-1"], "trainer.min_epochs"),
        (["num_threads=0"], "num_threads"),
        (["num_threads=6702637169"], "num_threads"),
        (["model.hidden_size=9223372036854775808"], "model.hidden_size"),
        # Dropout outside [0, 1), tolerance <= 0, val fraction outside (0, 1), other ranges.
        (["model.dropout=1.0"], "model.dropout"),
        (["model.dropout=-0.1"], "model.dropout"),
        (["data.tolerance=0"], "data.tolerance"),
        (["data.tolerance=-0.5"], "data.tolerance"),
        (["data.val_fraction=0"], "data.val_fraction"),
        (["data.val_fraction=1"], "data.val_fraction"),
        (["data.val_fraction=1.5"], "data.val_fraction"),
        (["optimizer.lr=-1"], "optimizer.lr"),
        (["optimizer.lr=nan"], "optimizer.lr"),
        (["optimizer.lr=inf"], "optimizer.lr"),
        (["optimizer.weight_decay=-1"], "optimizer.weight_decay"),
        (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val"),
        (["seed=-1"], "seed"),
        (["seed=4294967296"], "seed"),
        (["data.seed=-1"], "data.seed"),
        (["data.monitor=train/loss"], "data.monitor"),
        (["data.monitor_mode=up"], "data.monitor_mode"),
        (["model.cell=transformer"], "model.cell"),
        (["test_ckpt=first"], "test_ckpt"),
        # Splits larger than the data.
        (["data.num_sequences=1000"], "data.num_fit"),
        (["data.num_fit=3000"], "data.num_fit"),
        (["data.val_fraction=0.0001"], "data.val_fraction"),
        (["data.val_fraction=0.9999"], "data.val_fraction"),
        (["data.seq_len=1"], "data.seq_len"),
        (["data.variant=paper_1997", "data.seq_len=10"], "data.seq_len"),
        # Wrong types: strings, floats and bools for ints, ints for bools, lists, null.
        (["model.hidden_size=abc"], "model.hidden_size"),
        (["model.hidden_size=1.5"], "model.hidden_size"),
        (["model.hidden_size=true"], "model.hidden_size"),
        (["data.batch_size='32'"], "data.batch_size"),
        (["model.num_layers=null"], "model.num_layers"),
        (["model.dropout=[0.1]"], "model.dropout"),
        (["model.bidirectional=1"], "model.bidirectional"),
        (["optimizer.lr=fast"], "optimizer.lr"),
        (["model.hidden_size=${nope}"], "model.hidden_size"),
    ],
)
def test_impossible_values_are_refused_naming_the_key_and_fix(compose_cfg, overrides, key):
    assert_refused(compose_cfg(*overrides), key)


def test_cli_prints_the_composed_config():
    result = run_command("src.train", "model=lstm", "--cfg", "job")
    assert result.returncode == 0
    assert "cell: lstm" in result.stdout and "hidden_size: 30" in result.stdout


def test_cli_names_the_available_models_for_a_typo():
    result = run_command("src.train", "model=gur")
    assert result.returncode != 0
    assert "gur" in result.stderr
    assert all(name in result.stderr for name in ("gru", "lstm", "rnn"))


def test_cli_refuses_bad_values_before_any_output(tmp_path):
    result = run_command("src.train", "data.num_sequences=1000", f"paths.output_dir={tmp_path}")
    assert result.returncode == 2
    assert "data.num_fit=2560" in result.stderr and "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("model", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize(("mode", "input_size"), [("row", 28), ("pixel", 1), ("permuted", 1)])
def test_mnist_composes_with_its_classic_protocol(compose_cfg, model, mode, input_size):
    cfg = compose_cfg(f"model={model}", "data=mnist", f"data.mode={mode}")
    check_config(cfg)
    assert (cfg.model.hidden_size, cfg.model.num_layers) == (128, 1)
    assert (cfg.data.batch_size, cfg.optimizer.lr) == (128, 1e-3)
    assert (cfg.model.input_size, cfg.model.output_size) == (input_size, 10)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["data.mode=spiral"], "data.mode"),
        (["data.val_size=60000"], "data.val_size"),
        (["data.val_size=0"], "data.val_size"),
        (["data.train_subset=0"], "data.train_subset"),
        (["data.train_subset=55001"], "data.train_subset"),
        (["data.val_size=50000", "data.train_subset=20000"], "data.train_subset"),
        (["data.val_split=middle"], "data.val_split"),
        (["data.permutation_seed=-1"], "data.permutation_seed"),
        (["data.train_subset=1e3"], "data.train_subset"),
        (["data.augment_shift=-1"], "data.augment_shift"),
        (["data.augment_shift=28"], "data.augment_shift"),
        (["data.augment_shift=1.5"], "data.augment_shift"),
    ],
)
def test_mnist_bad_values_are_refused(compose_cfg, overrides, key):
    assert_refused(compose_cfg("data=mnist", *overrides), key)


def test_mnist_accepts_every_training_image_left_after_validation(compose_cfg):
    check_config(compose_cfg("data=mnist", "data.train_subset=55000"))


def test_cli_without_mnist_files_says_how_to_provide_them(tmp_path):
    result = run_command(
        "src.train",
        "data=mnist",
        "data.mirrors=[]",
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.output_dir={tmp_path / 'out'}",
    )
    assert result.returncode == 1
    assert "SEQLAB_MNIST_MIRROR" in result.stderr and "Traceback" not in result.stderr
