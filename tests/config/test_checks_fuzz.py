"""Property tests of the config checks: whatever a key holds, check_config either accepts the
config or refuses it with its own ConfigError (naming a fix), and a small multiplication config it
accepts builds a model and a datamodule that produce outputs."""

from __future__ import annotations

import copy
import functools
from datetime import timedelta
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf, open_dict

from src.config.checks import RULES, check_config, parameter_count
from src.config.errors import ConfigError
from src.config.instantiate import instantiate_group
from src.models.sequence_model import network_config
from src.training.run import build_module
from tests.conftest import command

QUICK = settings(
    max_examples=150,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow],
)
BUILDS = settings(max_examples=60, deadline=timedelta(seconds=20))

ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    # "$", "{" and "\" would make OmegaConf parse the text as an interpolation when it is set.
    st.text(alphabet=st.characters(blacklist_characters="${}\\"), max_size=8),
    st.sampled_from(
        ["row", "gru", "val/mse", "val/", "best", "paper_1997", "???", "${nope}", "${seed}"]
    ),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(-3, 3), max_size=2),
)


@functools.cache
def base_config(task: str) -> DictConfig:
    # No cache file: the generated sequences stay in memory.
    no_files = ["data.cache_file=null"] if task == "multiply" else []
    return command("train", f"data={task}", "num_threads=1", *no_files)


def with_values(task: str, values: dict[str, Any]) -> DictConfig:
    cfg = copy.deepcopy(base_config(task))
    with open_dict(cfg):
        for key, value in values.items():
            OmegaConf.update(cfg, key, value, merge=False, force_add=True)
    return cfg


def checked(cfg: DictConfig) -> bool:
    """Whether check_config accepts `cfg`; any exception but ConfigError fails the test."""
    try:
        check_config(cfg)
    except ConfigError as error:
        assert "Fix" in str(error), str(error)
        return False
    return True


@QUICK
@given(
    task=st.sampled_from(["multiply", "mnist"]),
    key=st.sampled_from([rule.key for rule in RULES]),
    value=ANY_VALUE,
)
def test_any_value_of_a_checked_key_is_accepted_or_refused_clearly(task, key, value):
    checked(with_values(task, {key: value}))


SIZES = st.integers(min_value=-3, max_value=70_000)
FRACTIONS = st.one_of(st.floats(-0.5, 1.5), st.sampled_from([0.0, 1.0, float("nan")]))


@QUICK
@given(
    num_sequences=SIZES,
    num_fit=SIZES,
    val_fraction=FRACTIONS,
    seq_len=st.integers(-3, 40),
    variant=st.sampled_from(["classic", "paper_1997"]),
)
def test_multiply_splits_and_lengths_are_accepted_or_refused_clearly(
    num_sequences, num_fit, val_fraction, seq_len, variant
):
    values = {
        "data.num_sequences": num_sequences,
        "data.num_fit": num_fit,
        "data.val_fraction": val_fraction,
        "data.seq_len": seq_len,
        "data.variant": variant,
    }
    cfg = with_values("multiply", values)
    if checked(cfg):
        num_val = round(num_fit * val_fraction)
        assert 1 <= num_val < num_fit < num_sequences


@QUICK
@given(val_size=SIZES, train_subset=st.one_of(st.none(), SIZES))
def test_mnist_splits_are_accepted_or_refused_clearly(val_size, train_subset):
    cfg = with_values("mnist", {"data.val_size": val_size, "data.train_subset": train_subset})
    if checked(cfg):
        assert 0 < val_size < 60_000
        assert train_subset is None or 0 < train_subset <= 60_000 - val_size


@pytest.fixture(scope="module", autouse=True)
def built_once():
    """Build each kind of model once, so that no example pays for a first build."""
    for implementation in ("fused", "torch"):
        build_module(with_values("multiply", {"model.implementation": implementation}))


@st.composite
def small_multiply_data(draw: st.DrawFn) -> dict[str, Any]:
    """Small multiplication data, mostly of sizes that fit together (so most configs pass)."""
    num_sequences = draw(st.integers(2, 60))
    return {
        "num_sequences": num_sequences,
        "num_fit": draw(st.integers(1, num_sequences)),
        "val_fraction": draw(st.floats(0.05, 0.95)),
        "seq_len": draw(st.integers(1, 24)),
        "variant": draw(st.sampled_from(["classic", "classic", "paper_1997"])),
        "batch_size": draw(st.integers(1, 40)),
    }


@BUILDS
@given(
    data=small_multiply_data(),
    model=st.fixed_dictionaries(
        {
            "cell": st.sampled_from(["rnn", "lstm", "gru"]),
            "hidden_size": st.integers(1, 6),
            "num_layers": st.integers(1, 3),
            "dropout": st.floats(0.0, 0.99),
            "bidirectional": st.booleans(),
            "implementation": st.sampled_from(["fused", "torch"]),
        }
    ),
)
def test_a_small_accepted_multiply_config_builds_and_runs(data, model):
    values = {f"data.{key}": value for key, value in data.items()}
    cfg = with_values("multiply", values | {f"model.{key}": v for key, v in model.items()})
    accepted = checked(cfg)
    event("accepted" if accepted else "refused")
    if not accepted:
        return
    module = build_module(cfg)
    datamodule = instantiate_group(cfg.data, "data", shuffle_seed=cfg.seed)
    datamodule.prepare_data()
    datamodule.setup()
    for split in ("train", "val", "test"):
        assert len(datamodule.splits[split]) > 0, split
    batch = next(iter(datamodule.train_dataloader()))
    with torch.no_grad():
        outputs = module.net(batch["x"], batch.get("lengths"))
    assert outputs.shape == (len(batch["x"]), 1)
    assert torch.isfinite(outputs).all()


@BUILDS
@given(
    cell=st.sampled_from(["rnn", "lstm", "gru"]),
    hidden_size=st.integers(1, 40),
    num_layers=st.integers(1, 3),
    input_size=st.integers(1, 30),
    bidirectional=st.booleans(),
)
def test_the_memory_check_counts_the_parameters_of_the_model_it_would_build(
    cell, hidden_size, num_layers, input_size, bidirectional
):
    values = {
        "model.cell": cell,
        "model.hidden_size": hidden_size,
        "model.num_layers": num_layers,
        "model.input_size": input_size,
        "model.bidirectional": bidirectional,
    }
    cfg = with_values("multiply", values)
    model = instantiate_group(network_config(cfg.model), "model")
    assert parameter_count(cfg.model) == sum(p.numel() for p in model.parameters())
