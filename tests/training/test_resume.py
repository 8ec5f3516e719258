import csv
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from src.training.checkpoints import CheckpointError, load_checkpoint
from src.training.run import train
from tests.conftest import QUICK, Interrupted, run_command

# Dropout, a cosine schedule and early stopping: everything a resume must carry over.
RUN = [
    "trainer.deterministic=true",
    "model.dropout=0.3",
    "scheduler=cosine",
    "callbacks=early_stopping",
    "trainer.max_epochs=4",
    *QUICK,
]


def interrupt_at(epoch: int, before_checkpoint: bool) -> list[str]:
    return [
        "+callbacks.interrupt._target_=tests.conftest.InterruptAtEpoch",
        f"+callbacks.interrupt.epoch={epoch}",
        f"+callbacks.interrupt.before_checkpoint={before_checkpoint}",
    ]


def val_mse_per_epoch(run_dir: Path) -> list[tuple[str, str]]:
    with (run_dir / "csv" / "metrics.csv").open() as handle:
        return [(row["epoch"], row["val/mse"]) for row in csv.DictReader(handle) if row["val/mse"]]


@pytest.mark.parametrize(
    "before_checkpoint", [False, True], ids=["after-checkpoint", "before-checkpoint"]
)
def test_an_interrupted_and_resumed_run_ends_like_an_uninterrupted_one(
    compose_cfg, tmp_path, before_checkpoint
):
    full, part = tmp_path / "full", tmp_path / "part"
    expected = train(compose_cfg(*RUN, f"paths.run_dir={full}"))
    with pytest.raises(Interrupted):
        train(compose_cfg(*RUN, f"paths.run_dir={part}", *interrupt_at(2, before_checkpoint)))
    resumed = train(compose_cfg(*RUN, f"paths.run_dir={part}", "ckpt_path=last"))

    for key in ("test/mse", "test/mae", "test/tolerance_accuracy", "best_val/mse", "epochs"):
        assert resumed[key] == expected[key], key
    assert val_mse_per_epoch(part) == val_mse_per_epoch(full)  # every epoch logged once
    ends = [load_checkpoint(run / "checkpoints" / "last.ckpt") for run in (full, part)]
    for name, tensor in ends[0]["state_dict"].items():
        assert torch.equal(tensor, ends[1]["state_dict"][name]), name
    assert ends[0]["lr_schedulers"] == ends[1]["lr_schedulers"]
    (stopping,) = (key for key in ends[0]["callbacks"] if key.startswith("EarlyStopping"))
    assert ends[0]["callbacks"][stopping] == ends[1]["callbacks"][stopping]
    adam = [end["optimizer_states"][0]["state"] for end in ends]
    for index, state in adam[0].items():
        assert torch.equal(state["exp_avg_sq"], adam[1][index]["exp_avg_sq"])


def test_a_resumed_wandb_run_continues_the_same_run(compose_cfg, tmp_path, wandb_offline):
    run_dir = tmp_path / "run"
    run = ["logger=wandb", "trainer.max_epochs=2", f"paths.run_dir={run_dir}", *QUICK]
    with pytest.raises(Interrupted):
        train(compose_cfg(*run, *interrupt_at(1, before_checkpoint=False)))
    train(compose_cfg(*run, "ckpt_path=last"))
    first, second = sorted((run_dir / "wandb").glob("offline-run-*"))
    run_id = (run_dir / "checkpoints" / "wandb_run_id").read_text().strip()
    assert run_id in first.name and run_id in second.name


def test_a_run_resumed_from_a_checkpoint_file_continues_in_its_run_directory(compose_cfg, tmp_path):
    train(compose_cfg("trainer.max_epochs=1", *QUICK))
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    results = train(
        compose_cfg("trainer.max_epochs=2", f"ckpt_path={run_dir}/checkpoints/last.ckpt", *QUICK)
    )
    assert results["epochs"] == 2
    assert [p.name for p in (tmp_path / "outputs" / "runs").iterdir()] == [run_dir.name]
    assert [epoch for epoch, _ in val_mse_per_epoch(run_dir)] == ["0", "1"]


def test_resuming_a_finished_run_writes_strict_json_with_null_for_the_untimed_epochs(
    compose_cfg, tmp_path
):
    run_dir = tmp_path / "run"
    train(compose_cfg("trainer.max_epochs=1", f"paths.run_dir={run_dir}", *QUICK))
    train(compose_cfg("trainer.max_epochs=1", f"paths.run_dir={run_dir}", "ckpt_path=last", *QUICK))

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    metrics = json.loads((run_dir / "metrics.json").read_text(), parse_constant=refuse)
    assert metrics["train_epoch_seconds"] is None and metrics["epochs"] == 1


def test_ckpt_path_last_needs_the_run_directory(compose_cfg, tmp_path):
    with pytest.raises(CheckpointError, match=r"paths\.run_dir=<run directory> ckpt_path=last"):
        train(compose_cfg("ckpt_path=last", *QUICK))
    assert not (tmp_path / "outputs").exists()  # refused before any run directory is made


def test_a_checkpoint_of_another_model_is_refused(compose_cfg, tmp_path):
    run_dir = tmp_path / "gru"
    train(compose_cfg("model=gru", "trainer.max_epochs=1", f"paths.run_dir={run_dir}", *QUICK))
    with pytest.raises(CheckpointError, match=r"model.cell='gru' \(this run: 'lstm'\)"):
        train(compose_cfg("model=lstm", f"paths.run_dir={run_dir}", "ckpt_path=last", *QUICK))


def test_a_checkpoint_that_would_run_code_is_refused_unrun(tmp_path):
    marker = tmp_path / "ran"

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": RunsCode()}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_resume_from_the_command_line_continues_the_run_as_it_was_configured(tmp_path):
    run_dir = tmp_path / "run"
    first = run_command(
        "src.train",
        *QUICK,
        "seed=3",
        "data.batch_size=16",
        "trainer.max_epochs=1",
        f"paths.run_dir={run_dir}",
        "trainer.enable_progress_bar=false",
    )
    assert first.returncode == 0, first.stderr[-2000:]
    # Only where and how long: seed, batch size and data come from the run itself.
    resumed = run_command(
        "src.train",
        f"paths.run_dir={run_dir}",
        "ckpt_path=last",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    config = (run_dir / "config.yaml").read_text()
    assert "seed: 3" in config and "batch_size: 16" in config and "seq_len: 10" in config
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 2
    assert "seed=3" in (run_dir / "overrides.yaml").read_text()  # the starting command's

    changed = run_command(
        "src.train", f"paths.run_dir={run_dir}", "ckpt_path=last", "optimizer.lr=0.5"
    )
    assert changed.returncode == 2
    assert "cannot change optimizer.lr=0.5" in changed.stderr


@pytest.fixture
def finished_run(tmp_path) -> Path:
    """A run of 3 epochs, with a copy of its epoch-0 checkpoint beside its own."""
    run_dir = tmp_path / "run"
    common = [*QUICK, f"paths.run_dir={run_dir}", "trainer.enable_progress_bar=false"]
    first = run_command("src.train", *common, "trainer.max_epochs=1")
    assert first.returncode == 0, first.stderr[-2000:]
    shutil.copy(run_dir / "checkpoints" / "last.ckpt", run_dir / "checkpoints" / "epoch0.ckpt")
    rest = run_command(
        "src.train", f"paths.run_dir={run_dir}", "ckpt_path=last", "trainer.max_epochs=3"
    )
    assert rest.returncode == 0, rest.stderr[-2000:]
    return run_dir


def test_a_resume_below_the_epochs_done_is_refused_in_one_line(finished_run):
    done = run_command(
        "src.train", f"paths.run_dir={finished_run}", "ckpt_path=last", "trainer.max_epochs=1"
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "trainer.max_epochs=1 is below the 3 epochs" in line
    assert "trainer.max_epochs=3 or more" in line


def test_ckpt_path_best_on_a_resume_is_refused_and_a_named_file_says_what_it_does(finished_run):
    refused = run_command("src.train", f"paths.run_dir={finished_run}", "ckpt_path=best")
    assert refused.returncode == 2
    assert "Continue the run with ckpt_path=last" in refused.stderr
    assert f"ckpt_path={finished_run / 'checkpoints' / 'best.ckpt'}" in refused.stderr

    epoch0 = finished_run / "checkpoints" / "epoch0.ckpt"
    named = run_command("src.train", f"ckpt_path={epoch0}", "trainer.max_epochs=3")
    assert named.returncode == 0, named.stderr[-2000:]
    assert "resuming from epoch0.ckpt, written in epoch 0, not from the run's last" in named.stdout
    assert "the epochs after 0 are trained again from there, up to trainer.max_epochs=3" in (
        named.stdout
    )
    assert json.loads((finished_run / "metrics.json").read_text())["epochs"] == 3
