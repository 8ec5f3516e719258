"""Bad input to the commands ends with a non-zero status and one line on stderr that names the
key (or group) and the fix, never a traceback from inside a library."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from src.config.checks import check_config
from src.config.errors import ConfigError, exit_on_user_error
from src.config.hints import unknown_override_messages
from src.config.instantiate import instantiate_group
from src.training.run import train
from tests.conftest import QUICK, Done, command, run_command, write_fake_mnist

TINY = [*QUICK, "trainer.max_epochs=1", "trainer.enable_progress_bar=false"]


def assert_refused(done: Done, *fragments: str) -> None:
    assert done.returncode != 0, done.stdout[-2000:]
    for fragment in fragments:
        assert fragment in done.stderr, (fragment, done.stderr[-3000:])
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("module", "args", "fragments"),
    [
        (
            "src.train",
            ["model.hiden_size=3"],
            [
                "model has no key 'hiden_size' (did you mean hidden_size?)",
                "its keys: _target_, bidirectional, cell, chrono_max_lag, dropout, head,",
                "Fix: model.hidden_size=3",
            ],
        ),
        (
            "src.train",
            ["modle=gru"],
            [
                "the config has no key or group 'modle' (did you mean model?)",
                "its groups (group=option): callbacks, data, debug,",
                "Fix: model=gru",
            ],
        ),
        (
            "src.train",
            ["optimizer.betas=[2,3]"],
            ["optimizer has no key 'betas'", "lr, weight_decay", "use +optimizer.betas=[2,3]"],
        ),
        ("src.eval", ["ckpt_path=x.ckpt", "splt=val"], ["(did you mean split?)", "Fix: split=val"]),
        (
            "src.predict",
            ["ckpt_path=x.ckpt", "ouput=p.csv"],
            ["(did you mean output?)", "Fix: output=p.csv"],
        ),
    ],
    ids=["key", "group", "argument", "eval", "predict"],
)
def test_an_unknown_key_or_group_is_named_with_those_there_are(module, args, fragments):
    assert_refused(run_command(module, *args), *fragments)


def test_the_keys_named_are_those_of_the_chosen_group_option():
    (message,) = unknown_override_messages("train", ["data=mnist", "data.seq_len=10"])
    assert message.startswith("data has no key 'seq_len'; its keys: _target_, augment_shift,")
    assert "val_size" in message and message.endswith("use +data.seq_len=10")


def test_flags_sweeps_and_additions_are_understood():
    argv = ["-m", "--cfg", "job", "model=rnn,gru", "+model.extra=1", "trainer.max_epoch=3"]
    (message,) = unknown_override_messages("train", argv)
    assert "trainer has no key 'max_epoch' (did you mean max_epochs?)" in message
    assert message.endswith("Fix: trainer.max_epochs=3")


def test_an_unknown_nested_group_names_the_groups():
    (message,) = unknown_override_messages("train", ["profil/quick=yes"])
    assert message.startswith("there is no config group 'profil/quick' (did you mean profile?)")


def test_known_keys_and_options_need_no_explanation():
    assert unknown_override_messages("train", ["model=lstm", "model.hidden_size=3"]) == []
    assert unknown_override_messages("train", ["model=gru,lstm"]) == []  # a sweep: Hydra says


@pytest.mark.parametrize("override", ["=3", "+=u", "~=", "++=1"])
def test_an_override_without_a_key_is_refused_in_one_line(override):
    done = run_command("src.train", override)
    assert done.returncode == 1
    assert done.stderr == (
        f"seqlab: config error: the override '{override}' names no key before '='. "
        "Fix: key=value (or +key=value to add a key).\n"
    )


def test_a_refusal_is_one_line_under_a_tracer_too(monkeypatch):
    """Under a debugger, coverage or hypothesis's shrinker, Hydra raises its refusals rather
    than printing them; the command's answer must not change."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    plain = run_command("src.train", "model=gruu")
    previous = sys.gettrace()
    sys.settrace(lambda *event: None)
    try:
        traced = run_command("src.train", "model=gruu")
    finally:
        sys.settrace(previous)
    assert (
        (traced.returncode, traced.stderr)
        == (plain.returncode, plain.stderr)
        == (
            1,
            "seqlab: config error: model has no option 'gruu' (did you mean gru?); its options: "
            "gru, lstm, rnn. Fix: model=gru\n",
        )
    )


def test_a_command_line_hydra_fails_on_ends_in_its_reason_not_a_traceback():
    done = run_command("src.train", "-s")  # Hydra takes -s for --shell-completion, then fails
    assert done.returncode == 1
    assert done.stderr.startswith("seqlab: config error: ValueError: Expecting one subcommand")
    assert done.stderr.endswith("(HYDRA_FULL_ERROR=1 shows the traceback)\n")
    assert len(done.stderr.splitlines()) == 1


def test_an_unknown_option_names_the_options_of_its_group():
    (message,) = unknown_override_messages("train", ["model=gruu"])
    assert message == (
        "model has no option 'gruu' (did you mean gru?); its options: gru, lstm, rnn. "
        "Fix: model=gru"
    )


@pytest.mark.parametrize(
    ("args", "group", "reason"),
    [
        pytest.param(
            ["trainer.accelerator=gpu"],
            "trainer",
            "No supported gpu backend found!",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there"),
        ),
        (["trainer.precision=99"], "trainer", "Precision 99 is invalid."),
        (["+optimizer.betas=[2,3]"], "optimizer", "Invalid beta parameter at index 0: 2"),
        (["optimizer._target_=nope.Adam"], "optimizer", "No module named 'nope'"),
        (["+model.size=3"], "model", "unexpected keyword argument 'size'"),
        (
            ["logger=tensorboard", "+logger.tensorboard.foo=1"],
            "logger",
            "unexpected keyword argument 'foo'",
        ),
        (
            ["callbacks=early_stopping", "callbacks.early_stopping.mode=sideways"],
            "callbacks",
            "`mode` can be min, max, got sideways",
        ),
    ],
    ids=["no-gpu", "precision", "betas", "target", "argument", "logger", "callback"],
)
def test_a_library_refusal_names_the_group_the_reason_and_the_fix(tmp_path, args, group, reason):
    paths = [f"paths.output_dir={tmp_path}", f"paths.data_dir={tmp_path / 'data'}"]
    done = run_command("src.train", *args, *TINY, *paths)
    assert done.returncode == 2
    (line,) = (line for line in done.stderr.splitlines() if line.startswith("seqlab: "))
    assert line.startswith(f"seqlab: config error: {group}: the config was refused: ")
    assert reason in line and f"--cfg job --package {group}" in line
    assert "Traceback" not in done.stderr
    assert not list((tmp_path / "runs").glob("*"))  # no run directory left behind


@pytest.mark.parametrize(
    ("node", "group", "reason"),
    [
        (
            {"_target_": "lightning.pytorch.Trainer", "devices": "abc"},
            "trainer",
            "`devices` selected with `CPUAccelerator` should be an int > 0.",
        ),
        (
            {
                "_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau",
                "_partial_": True,
                "mode": "avg",
            },
            "scheduler",
            "mode avg is unknown!",
        ),
        ({"_target_": "torch.optim.SGD", "_partial_": True, "lr": -1}, "optimizer", "-1"),
    ],
)
def test_instantiate_group_turns_a_refusal_into_a_config_error(node, group, reason):
    with pytest.raises(ConfigError, match=f"^{group}: ") as refused:
        instantiate_group(OmegaConf.create(node), group)
    assert reason in str(refused.value) and f"{group}=<option>" in str(refused.value)


def test_an_error_that_is_no_refusal_of_the_config_passes_through(tmp_path):
    node = OmegaConf.create({"_target_": "builtins.open", "file": str(tmp_path / "absent")})
    with pytest.raises(InstantiationException) as error:
        instantiate_group(node, "data")
    assert isinstance(error.value.__cause__, FileNotFoundError)


def test_any_other_instantiation_refusal_ends_in_one_line_naming_its_group(capsys):
    cfg = OmegaConf.create({"logger": {"csv": {"_target_": "torch.optim.Adam", "lr": 1}}})
    with pytest.raises(SystemExit) as done, exit_on_user_error():
        instantiate(cfg.logger.csv)
    assert done.value.code == 2
    assert capsys.readouterr().err.startswith("seqlab: config error: logger: the config was")


def _compose(home: Path, *overrides: str) -> DictConfig:
    paths = [f"paths.output_dir={home / 'outputs'}", f"paths.data_dir={home / 'data'}"]
    return command("train", *paths, "~callbacks.model_summary", *overrides)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """The best.ckpt of a tiny run of each task."""
    home = tmp_path_factory.mktemp("checkpoints")
    train(_compose(home, *TINY, f"paths.run_dir={home / 'multiply'}"))
    mirror = home / "mirror"
    checksums = write_fake_mnist(mirror)
    mnist = _compose(
        home,
        "data=mnist",
        f"data.local_mirror={mirror}",
        "data.val_size=50",
        "data.batch_size=50",
        "model.hidden_size=8",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "num_threads=1",
        f"paths.run_dir={home / 'mnist'}",
    )
    with open_dict(mnist):
        mnist.data.checksums = checksums
    train(mnist)
    return {task: home / task / "checkpoints" / "best.ckpt" for task in ("multiply", "mnist")}


@pytest.mark.parametrize(
    ("module", "task", "args", "difference"),
    [
        ("src.train", "multiply", ["data=mnist"], "data.name='multiply' (this run: 'mnist')"),
        ("src.train", "mnist", ["data=multiply"], "data.name='mnist' (this run: 'multiply')"),
        ("src.eval", "multiply", ["data=mnist"], "data.name='multiply' (this run: 'mnist')"),
        ("src.eval", "mnist", ["data=multiply"], "data.name='mnist' (this run: 'multiply')"),
        ("src.eval", "multiply", ["model=lstm"], "model.cell='gru' (this run: 'lstm')"),
    ],
)
def test_a_checkpoint_of_another_task_or_model_is_refused(
    checkpoints, tmp_path, module, task, args, difference
):
    done = run_command(
        module,
        f"ckpt_path={checkpoints[task]}",
        *args,
        f"paths.output_dir={tmp_path}",
        f"paths.data_dir={tmp_path / 'data'}",
    )
    assert done.returncode == 2
    assert_refused(done, "is from another model or task", difference, "Use a checkpoint of")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("key", ["optimizer.lr", "optimizer.weight_decay"])
def test_an_integer_beyond_64_bits_for_a_number_is_refused(compose_cfg, key):
    # Found by tests/test_cli_properties.py: Lightning's LR monitor crashed on lr=10**20.
    with pytest.raises(ConfigError, match=f"{key}=100000000000000000000 is an integer too large"):
        check_config(compose_cfg(f"{key}={10**20}"))
