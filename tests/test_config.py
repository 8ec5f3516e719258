import pytest
from omegaconf import OmegaConf

from src.config_checks import ConfigError, check_config
from tests.conftest import run_cli


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


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.hidden_size=0", "model.hidden_size"),
        ("model.num_layers=-1", "model.num_layers"),
        ("model.dropout=1.0", "model.dropout"),
        ("model.hidden_size=abc", "model.hidden_size"),
        ("data.tolerance=0", "data.tolerance"),
        ("data.val_fraction=1.5", "data.val_fraction"),
        ("data.num_sequences=1000", "data.num_fit"),
        ("data.batch_size=0", "data.batch_size"),
        ("optimizer.lr=-1", "optimizer.lr"),
    ],
)
def test_impossible_values_are_refused_naming_the_key(compose_cfg, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_config(compose_cfg(override))


def test_cli_prints_the_composed_config():
    result = run_cli("model=lstm", "--cfg", "job")
    assert result.returncode == 0
    assert "cell: lstm" in result.stdout and "hidden_size: 30" in result.stdout


def test_cli_names_the_available_models_for_a_typo():
    result = run_cli("model=gur")
    assert result.returncode != 0
    assert "gur" in result.stderr
    assert all(name in result.stderr for name in ("gru", "lstm", "rnn"))


def test_cli_refuses_bad_values_before_any_output(tmp_path):
    result = run_cli("data.num_sequences=1000", f"paths.output_dir={tmp_path}")
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
    ("override", "key"),
    [("data.mode=spiral", "data.mode"), ("data.val_size=60000", "data.val_size")],
)
def test_mnist_bad_values_are_refused(compose_cfg, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_config(compose_cfg("data=mnist", override))


def test_cli_without_mnist_files_says_how_to_provide_them(tmp_path):
    result = run_cli(
        "data=mnist",
        "data.mirrors=[]",
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.output_dir={tmp_path / 'out'}",
    )
    assert result.returncode == 1
    assert "SEQLAB_MNIST_MIRROR" in result.stderr and "Traceback" not in result.stderr
