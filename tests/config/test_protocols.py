"""A protocol changes how the classic model is trained, never the model or the evaluation."""

from typing import Any

import pytest
from omegaconf import OmegaConf

from tests.conftest import CONF, command

TASKS_WITH_BEST = sorted(
    p.stem.removesuffix("_best") for p in (CONF / "experiment").glob("*_best.yaml")
)
# What a protocol may change in a task's data config: how training batches are drawn (and
# MNIST's training digits shifted), never what is validated or tested.
TRAINING_DATA_KEYS = {"batch_size", "regime", "augment_shift"}


# Model keys that say how the model is computed or initialised, not what it is.
NOT_ARCHITECTURE = {"implementation", "init", "chrono_max_lag"}


def architecture(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg["model"].items() if k not in NOT_ARCHITECTURE}


def composed(*overrides: str) -> dict:
    cfg = command("train", *overrides)
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def test_every_task_has_a_classic_and_a_best_protocol():
    tasks = {p.stem for p in (CONF / "data").glob("*.yaml")}
    assert {
        p.stem.removesuffix("_classic") for p in (CONF / "experiment").glob("*_classic.yaml")
    } == tasks
    assert set(TASKS_WITH_BEST) == tasks


def test_the_default_study_runs_every_task_under_protocols_that_exist():
    study = OmegaConf.to_container(OmegaConf.load(CONF / "study.yaml"))["study"]  # type: ignore[index]
    tasks = {p.stem for p in (CONF / "data").glob("*.yaml")}
    assert {"multiply", "mnist", *study["tasks"]} == tasks
    for task in tasks:
        for protocol in study["protocols"]:
            assert (CONF / "experiment" / f"{task}_{protocol}.yaml").is_file(), (task, protocol)


@pytest.mark.parametrize("task", sorted(p.stem for p in (CONF / "data").glob("*.yaml")))
def test_the_classic_protocol_is_the_task_file_as_it_is(task):
    assert composed(f"experiment={task}_classic") == composed(f"data={task}")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("task", TASKS_WITH_BEST)
def test_the_best_protocol_trains_the_classic_model_on_the_classic_splits(task, cell):
    classic = composed(f"experiment={task}_classic", f"model={cell}")
    best = composed(f"experiment={task}_best", f"model={cell}")
    assert best["protocol"] == "best" and classic["protocol"] == "classic"
    assert architecture(best) == architecture(classic)
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


SEARCHES = sorted(p.stem for p in (CONF / "hparams_search").glob("*_protocol.yaml"))
# Searches that score a protocol's settings over several seeds (one cell's, on one task).
SEED_SEARCHES = sorted(p.stem for p in (CONF / "hparams_search").glob("*_seeds.yaml"))
# Searches that start from a best protocol and try one more training setting on it.
ON_BEST_SEARCHES = ["mnist_augment"]
# The search any suite task can run with its own data; the suite tasks' own searches start from it.
GENERIC_SEARCH = "suite_protocol"


@pytest.mark.parametrize("search", SEARCHES + SEED_SEARCHES + ON_BEST_SEARCHES)
def test_searches_tune_training_only(search):
    cfg = command("train", f"hparams_search={search}", with_hydra=True)
    tuned = set(cfg.hydra.sweeper.params)
    assert tuned and not {k for k in tuned if k.startswith("model.")} - {"model.init"}
    assert cfg.optimized_metric == cfg.data.monitor


@pytest.mark.parametrize("search", ON_BEST_SEARCHES)
def test_a_search_on_a_best_protocol_trains_it_on_a_seed_the_study_does_not_report(search):
    cfg = command("train", f"hparams_search={search}", with_hydra=True)
    assert cfg.protocol == "best"
    study = OmegaConf.load(CONF / "study.yaml").study
    assert cfg.seed not in {*study.multiply_seeds, *study.mnist_seeds, *study.task_seeds}


@pytest.mark.parametrize("search", SEED_SEARCHES)
def test_a_seed_search_chooses_on_seeds_the_study_does_not_report(search):
    cfg = command("train", f"hparams_search={search}", with_hydra=True)
    seeds = {int(s) for s in str(cfg.hydra.sweeper.params.seed).split(",")}
    study = OmegaConf.load(CONF / "study.yaml").study
    reported = {*study.multiply_seeds, *study.mnist_seeds, *study.task_seeds}
    assert len(seeds) >= 3 and not seeds & reported


def test_every_task_search_has_its_best_protocol():
    tasks = {s.removesuffix("_protocol") for s in SEARCHES if s != GENERIC_SEARCH}
    assert tasks == set(TASKS_WITH_BEST)


SUITE = sorted({p.stem for p in (CONF / "data").glob("*.yaml")} - {"multiply", "mnist"})


@pytest.mark.parametrize("task", SUITE)
def test_the_generic_search_goes_the_way_each_suite_task_improves(task):
    cfg = command("train", f"hparams_search={GENERIC_SEARCH}", f"data={task}", with_hydra=True)
    assert cfg.data.monitor_mode == "min" and cfg.hydra.sweeper.direction == "minimize"
