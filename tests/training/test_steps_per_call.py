"""Several batches per call of training_step (`steps_per_call`) train exactly as one per call:
the same batches, the same optimizer steps, the same weights; limits and messages count
batches, not calls."""

import pytest
import torch
from omegaconf import OmegaConf

from src.config.checks import check_config
from src.config.errors import ConfigError
from src.data.in_memory import batch_limit
from src.training.checkpoints import load_checkpoint
from src.training.run import steps_per_call_of, train, trainer_overrides
from tests.conftest import QUICK, run_command
from tests.training.test_faults import csv_rows

# 13 batches of 16 an epoch, of which limit_train_batches (quick profile: 8) trains the first 8.
SMALL = [*QUICK, "data.batch_size=16", "trainer.deterministic=true"]
COPY = ["profile=quick", "data=copy", "data.lag=6", "data.to_copy=3", "data.num_train=208",
        "data.num_val=32", "data.num_test=32", "data.batch_size=16", "model.tbptt_steps=4",
        "trainer.deterministic=true"]  # fmt: skip
CASES = {
    "gru": SMALL,
    "lstm, torch, clipped, cosine schedule": [
        *SMALL,
        "model=lstm",
        "trainer.gradient_clip_val=0.5",
        "scheduler=cosine",
    ],
    # Dropout draws from the generator, which is seeded per batch, not per call.
    "gru, dropout": [*SMALL, "model.num_layers=2", "model.dropout=0.3"],
    "truncated BPTT": [*SMALL, "model.tbptt_steps=4"],
    "every step, truncated BPTT": COPY,
}


def run(compose_cfg, run_dir, *overrides):
    results = train(compose_cfg(*overrides, f"paths.run_dir={run_dir}"))
    return results, load_checkpoint(run_dir / "checkpoints" / "last.ckpt")


@pytest.mark.parametrize("case", CASES)
def test_calls_of_several_batches_train_exactly_as_calls_of_one(compose_cfg, tmp_path, case):
    one, one_ckpt = run(compose_cfg, tmp_path / "one", *CASES[case], "steps_per_call=1")
    # 8 batches in calls of 3: 3 + 3 + 2.
    three, three_ckpt = run(compose_cfg, tmp_path / "three", *CASES[case], "steps_per_call=3")
    # 2 epochs of 8 batches, a step each (truncated BPTT with one target per sequence too);
    # the copy task's 12 steps (3 + 6 + 3) in chunks of 4: 3 steps a batch.
    steps = 2 * 8 * (3 if case.startswith("every step") else 1)
    assert one_ckpt["global_step"] == three_ckpt["global_step"] == steps
    weights = {k: v for k, v in one_ckpt["state_dict"].items() if k.startswith("net.")}
    for name, tensor in weights.items():
        assert torch.equal(three_ckpt["state_dict"][name], tensor), name
    for key, value in one.items():
        if key.startswith(("test/", "best_")):
            assert three[key] == value, key
    # The training epoch's figures sum the same values in another order.
    rows_one, rows_three = csv_rows(tmp_path / "one"), csv_rows(tmp_path / "three")
    for row_one, row_three in zip(rows_one, rows_three, strict=True):
        for key, value in row_one.items():
            if key.startswith("train/") and value:
                assert float(row_three[key]) == pytest.approx(float(value), rel=1e-5), key


def test_a_divergence_inside_a_call_is_named_at_its_batch(compose_cfg, tmp_path):
    # Poisoned after call 0 of epoch 1 (its batches 0-2): batch 3 is the first NaN loss.
    poisoned = [
        "+callbacks.poison._target_=tests.conftest.PoisonWeights",
        "+callbacks.poison.epoch=1",
        "+callbacks.poison.batch=0",
    ]
    done = run_command(
        "src.train", *SMALL, "steps_per_call=3", f"paths.run_dir={tmp_path / 'run'}", *poisoned
    )
    assert done.returncode == 1
    assert "the training loss became nan at epoch 1, batch 3 (optimizer step 12)" in done.stderr


@pytest.mark.parametrize(
    "setting",
    [
        "+trainer.accumulate_grad_batches=2",
        "+trainer.val_check_interval=10",
        "+trainer.val_check_interval=1",  # the integer: after every batch
        "+trainer.val_check_interval=0.5",
        "+trainer.max_steps=5",
        "+trainer.overfit_batches=2",
        "debug=fast_dev_run",
    ],
)
def test_trainer_settings_that_count_calls_train_a_batch_per_call(compose_cfg, setting):
    assert steps_per_call_of(compose_cfg("steps_per_call=16")) == 16
    assert steps_per_call_of(compose_cfg("steps_per_call=16", setting)) == 1


@pytest.mark.parametrize(
    "setting", ["+trainer.val_check_interval=1.0", "+trainer.max_steps=-1", "debug=limit"]
)
def test_settings_that_count_nothing_keep_several_batches_per_call(compose_cfg, setting):
    assert steps_per_call_of(compose_cfg("steps_per_call=16", setting)) == 16


def test_max_steps_stops_at_its_optimizer_step(compose_cfg, tmp_path):
    # 8 batches an epoch: in calls of 16 Lightning would check max_steps only after all 8.
    _, checkpoint = run(compose_cfg, tmp_path, *SMALL, "steps_per_call=16", "+trainer.max_steps=5")
    assert checkpoint["global_step"] == 5
    # The run's saved config says what it did, so that a resume does the same; its log says why.
    assert OmegaConf.load(tmp_path / "config.yaml").steps_per_call == 1
    assert "not steps_per_call=16: trainer.max_steps=5 counts calls" in (
        (tmp_path / "train.log").read_text()
    )


def test_a_call_count_of_zero_is_refused(compose_cfg):
    with pytest.raises(ConfigError, match="steps_per_call=0 is not allowed"):
        check_config(compose_cfg("steps_per_call=0"))


def test_the_logging_interval_counts_batches_too(compose_cfg):
    # 50 batches are about 3 calls of 16; Lightning warns when an epoch has fewer calls.
    overrides = trainer_overrides(compose_cfg("steps_per_call=16", "trainer.log_every_n_steps=50"))
    assert overrides["log_every_n_steps"] == 3
    assert "log_every_n_steps" not in trainer_overrides(compose_cfg("steps_per_call=1"))


def test_the_training_limit_counts_batches_as_lightning_reads_it():
    assert batch_limit(0.5, 10) == 5 and batch_limit(8.0, 20) == 8 and batch_limit(30, 20) == 20
    assert batch_limit(1.0, 20) is None and batch_limit(None, 20) is None
    for impossible in (2.5, -1):
        with pytest.raises(ConfigError, match="neither a fraction of the epoch in"):
            batch_limit(impossible, 20)
