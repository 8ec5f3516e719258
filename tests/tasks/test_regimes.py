"""The online regime draws fresh, reproducible training data; truncated BPTT and online runs
resume exactly where a signal stopped them."""

import signal

import pytest
import torch

from src.data.adding import AddingDataModule
from src.data.in_memory import OnlineDataset
from tests.conftest import run_cli, run_command
from tests.training.test_faults import csv_rows, results, signal_at

ADDING = {"num_train": 64, "num_val": 16, "num_test": 16, "seed": 5, "seq_len": 20}


def test_the_online_regime_draws_each_epoch_afresh_and_the_same_every_time():
    online = AddingDataModule(regime="online", **ADDING).build_splits()
    fixed = AddingDataModule(regime="fixed", **ADDING).build_splits()
    train = online["train"]
    assert isinstance(train, OnlineDataset)
    epoch0 = dict(train.tensors)
    train.set_epoch(1)
    epoch1 = dict(train.tensors)
    assert not torch.equal(epoch0["x"], epoch1["x"])
    assert not torch.equal(epoch0["x"], fixed["train"].tensors["x"])
    # Another module (a resumed run) draws the same epoch 1.
    again = AddingDataModule(regime="online", **ADDING).build_splits()["train"]
    again.set_epoch(1)
    for name in epoch1:
        assert torch.equal(again.tensors[name], epoch1[name])
    # Validation and test are the fixed sets.
    for split in ("val", "test"):
        for name, tensor in fixed[split].tensors.items():
            assert torch.equal(online[split].tensors[name], tensor)


COMMON = ["num_threads=1", "trainer.deterministic=true", "trainer.enable_progress_bar=false"]
CASES = {
    "online": [
        "data=adding", "data.regime=online", "data.seq_len=20", "data.num_train=512",
        "data.num_val=64", "data.num_test=64", "trainer.max_epochs=3",
    ],
    "tbptt": [
        "data=copy", "data.lag=10", "data.to_copy=3", "data.num_train=512", "data.num_val=64",
        "data.num_test=64", "data.batch_size=32", "model.tbptt_steps=4", "trainer.max_epochs=2",
        "trainer.gradient_clip_val=1.0",
    ],
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_a_run_stopped_mid_epoch_resumes_to_the_same_end(tmp_path, case):
    reference, run_dir = tmp_path / "reference", tmp_path / "run"
    # 16 batches an epoch, in calls of 3 (test_faults runs a call per batch).
    overrides = [*COMMON, *CASES[case], f"paths.data_dir={tmp_path / 'data'}", "steps_per_call=3"]
    done = run_command("src.train", *overrides, f"paths.run_dir={reference}")
    assert done.returncode == 0, done.stderr[-3000:]
    stopped = run_cli(*overrides, f"paths.run_dir={run_dir}", *signal_at(1, 3, signal.SIGTERM))
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    # Signalled in call 3 of epoch 1 (batches 9-11): stopped after batch 11, resumed at 12.
    assert "after epoch 1, batch 11" in stopped.stderr
    resumed = run_command("src.train", f"paths.run_dir={run_dir}", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert results(run_dir) == results(reference)
    assert csv_rows(run_dir) == csv_rows(reference)
