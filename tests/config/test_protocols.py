"""A protocol changes how the classic model is trained, never the model or the evaluation."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import CONF, command

TASKS_WITH_BEST = sorted(
    p.stem.removesuffix("_best") for p in (CONF / "experiment").glob("*_best.yaml")
)
# What a protocol may change in a task's data config: how batches are drawn, not what is tested.
TRAINING_DATA_KEYS = {"batch_size", "regime"}


def composed(*overrides: str) -> dict:
    cfg = command("train", *overrides)
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def test_every_task_has_a_classic_protocol_and_the_study_tasks_a_best_one():
    tasks = {p.stem for p in (CONF / "data").glob("*.yaml")}
    assert {
        p.stem.removesuffix("_classic") for p in (CONF / "experiment").glob("*_classic.yaml")
    } == tasks
    assert {"multiply", "mnist"} <= set(TASKS_WITH_BEST)


@pytest.mark.parametrize("task", sorted(p.stem for p in (CONF / "data").glob("*.yaml")))
def test_the_classic_protocol_is_the_task_file_as_it_is(task):
    assert composed(f"experiment={task}_classic") == composed(f"data={task}")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("task", TASKS_WITH_BEST)
def test_the_best_protocol_trains_the_classic_model_on_the_classic_splits(task, cell):
    classic = composed(f"experiment={task}_classic", f"model={cell}")
    best = composed(f"experiment={task}_best", f"model={cell}")
    assert best["protocol"] == "best" and classic["protocol"] == "classic"
    model = {k: v for k, v in best["model"].items() if k != "implementation"}
    assert model == {k: v for k, v in classic["model"].items() if k != "implementation"}
    changed = {k for k in classic["data"] if classic["data"][k] != best["data"].get(k)}
    assert changed <= TRAINING_DATA_KEYS
    assert best["data"]["monitor"] == classic["data"]["monitor"]
    # The lookup by cell resolved to a number, not to another cell's entry or a string.
    assert isinstance(best["optimizer"]["lr"], float)
    assert best["optimizer"]["lr"] == best["searched"][cell]["lr"]


def test_the_quick_profile_shortens_a_best_protocol_too():
    cfg = composed("experiment=multiply_best", "profile=quick")
    assert cfg["trainer"]["max_epochs"] == 2 and cfg["trainer"]["limit_train_batches"] == 8
    assert cfg["protocol"] == "best"


def test_searches_tune_training_only():
    for path in (CONF / "hparams_search").glob("*_protocol.yaml"):
        params = OmegaConf.load(path).hydra.sweeper.params
        tuned = set(params)
        assert not {k for k in tuned if k.startswith("model.")}, path
        assert Path(path).stem.removesuffix("_protocol") in TASKS_WITH_BEST
