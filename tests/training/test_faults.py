"""Faults a run must survive, each provoked for real: signals, kills, corrupt checkpoints, a
diverging loss, a full disk, an unwritable or occupied output directory.

Each run goes through the real command line in its own process, as a user's would.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from src.training.checkpoints import load_checkpoint
from tests.conftest import REPO, Done, run_cli, run_command

# Deterministic CPU training, small enough for seconds, long enough (64 batches an epoch) for a
# signal from outside to land mid-epoch. Dropout makes the resumed randomness matter.
RUN = [
    "data.seq_len=10",
    "data.num_sequences=3000",
    "data.num_fit=2560",
    "num_threads=1",
    "trainer.max_epochs=3",
    "trainer.deterministic=true",
    "model.dropout=0.3",
    "trainer.enable_progress_bar=false",
    "~callbacks.model_summary",
    # A call of training_step per batch: Lightning's own loop (tests/tasks/test_regimes.py
    # stops and resumes runs of several batches a call).
    "steps_per_call=1",
]
# What may differ between a resumed run and one that never stopped.
UNTIMED = {"test_checkpoint", "train_epoch_seconds", "fit_seconds", "time/train_epoch_s"}


def signal_at(epoch: int, batch: int, signum: int) -> list[str]:
    return [
        "+callbacks.signal._target_=tests.conftest.SignalAtBatch",
        f"+callbacks.signal.epoch={epoch}",
        f"+callbacks.signal.batch={batch}",
        f"+callbacks.signal.signum={int(signum)}",
    ]


def train_cli(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    """The run in a process of its own: for real signals and kills."""
    return run_cli(*RUN, f"paths.run_dir={run_dir}", *overrides)


def train_here(run_dir: Path, *overrides: str) -> Done:
    """The same command in this process: for everything that needs no process of its own."""
    return run_command("src.train", *RUN, f"paths.run_dir={run_dir}", *overrides)


def resume_cli(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    return run_cli(f"paths.run_dir={run_dir}", "ckpt_path=last", *overrides)


def results(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {key: value for key, value in metrics.items() if key not in UNTIMED}


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "csv" / "metrics.csv").open() as handle:
        return [
            {k: v for k, v in row.items() if k not in UNTIMED} for row in csv.DictReader(handle)
        ]


def assert_ends_like(run_dir: Path, reference: Path) -> None:
    assert results(run_dir) == results(reference)
    assert csv_rows(run_dir) == csv_rows(reference)  # every epoch logged once, with equal figures


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run as it ends when nothing stops it."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    done = train_here(run_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_epoch_saves_a_checkpoint_that_resumes_to_the_same_end(
    tmp_path, reference, signum
):
    run_dir = tmp_path / "run"
    stopped = train_cli(run_dir, *signal_at(epoch=1, batch=5, signum=signum))

    assert stopped.returncode == 128 + signum
    assert f"stopped by {signum.name} after epoch 1, batch 5" in stopped.stderr
    assert f"paths.run_dir={run_dir} ckpt_path=last" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    last = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    (loader_state,) = last["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader_state == {"epoch": 1, "batches_done": 6}  # mid-epoch, after batch 5

    resumed = resume_cli(run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_ends_like(run_dir, reference)


def epoch_logged(run_dir: Path, epoch: int) -> bool:
    """Whether the epoch's training row is in metrics.csv (logged after its checkpoints)."""
    metrics_csv = run_dir / "csv" / "metrics.csv"
    if not metrics_csv.is_file():
        return False
    return any(
        row.get("epoch") == str(epoch) and row.get("train/loss") for row in csv_rows(run_dir)
    )


@pytest.mark.slow
def test_a_signal_to_rank_zero_stops_every_ddp_rank_at_one_batch_and_resumes_exactly(tmp_path):
    ddp = ["trainer=ddp_cpu", "num_threads=1"]
    reference, run_dir = tmp_path / "reference", tmp_path / "run"
    assert train_cli(reference, *ddp).returncode == 0
    stopped = train_cli(
        run_dir,
        *ddp,
        *signal_at(epoch=1, batch=5, signum=signal.SIGTERM),
        "+callbacks.signal.rank=0",
    )

    assert stopped.returncode == 143, stopped.stderr[-3000:]
    # Both ranks stop after the same batch, though only rank 0 got the signal: the ranks agree
    # every 16 batches (and at an epoch's last): the signal after batch 5 stops them after 15.
    assert stopped.stderr.count("stopped by SIGTERM after epoch 1, batch 15") == 2
    resumed = resume_cli(run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert results(run_dir) == results(reference)
    # The sums of both ranks were saved, so even the interrupted epoch's row matches, to
    # float32 rounding: the resumed sum adds the same numbers in another order.
    for row, expected in zip(csv_rows(run_dir), csv_rows(reference), strict=True):
        assert row.keys() == expected.keys()
        for key, value in expected.items():
            assert float(row[key] or "nan") == pytest.approx(
                float(value or "nan"), rel=1e-6, nan_ok=True
            ), key


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_run_killed_from_outside_resumes_to_the_same_end(tmp_path, reference, signum):
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "src.train", *RUN, f"paths.run_dir={run_dir}"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signum)  # at once after epoch 0's checkpoints: early in epoch 1
    _, stderr = process.communicate(timeout=120)
    assert process.returncode in (-signal.SIGKILL, 128 + signal.SIGTERM), stderr[-3000:]
    assert not (run_dir / "metrics.json").exists()  # it did stop before the end

    resumed = resume_cli(run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_ends_like(run_dir, reference)
    assert not list(run_dir.rglob(".*.tmp"))  # a write cut off by the kill leaves nothing


@pytest.mark.slow
def test_a_kill_between_an_epochs_checkpoint_and_its_log_row_loses_no_row(tmp_path, reference):
    run_dir = tmp_path / "run"
    kill_after_checkpoints = [
        "+callbacks.kill._target_=tests.conftest.KillAfterEpochCheckpoints",
        "+callbacks.kill.epoch=0",
    ]
    killed = train_cli(run_dir, *kill_after_checkpoints)
    assert killed.returncode == -signal.SIGKILL
    assert not epoch_logged(run_dir, 0)  # the kill came before the epoch's training row

    resumed = resume_cli(run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_ends_like(run_dir, reference)


@pytest.mark.slow
def test_a_sigterm_while_testing_exits_non_zero_and_a_resume_tests(tmp_path, reference):
    run_dir = tmp_path / "run"
    signal_when_testing = [
        "+callbacks.signal._target_=tests.conftest.SignalAtTestBatch",
        f"+callbacks.signal.signum={int(signal.SIGTERM)}",
        f"+callbacks.signal.marker={tmp_path / 'signalled'}",
    ]
    stopped = train_cli(run_dir, *signal_when_testing)
    assert stopped.returncode == 143  # Lightning's own handling would exit 0
    assert "stopped by SIGTERM after training" in stopped.stderr
    assert not (run_dir / "metrics.json").exists()

    resumed = resume_cli(run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert results(run_dir) == results(reference)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 3  # inside the tensors: torch.load alone would load the bad weights
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    path.write_bytes(bytes(data))


@pytest.mark.slow
@pytest.mark.parametrize("damage", [truncate, flip_bytes], ids=["truncated", "flipped-bytes"])
def test_a_corrupt_last_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, reference, damage):
    run_dir = tmp_path / "run"
    stopped = train_cli(run_dir, *signal_at(epoch=2, batch=3, signum=signal.SIGTERM))
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    damage(run_dir / "checkpoints" / "last.ckpt")

    resumed = resume_cli(run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    best = run_dir / "checkpoints" / "best.ckpt"
    assert f"Falling back to {best}" in resumed.stdout
    assert "last.ckpt" in resumed.stdout.split("Falling back")[0]  # names the bad file first
    assert_ends_like(run_dir, reference)


def test_a_corrupt_checkpoint_named_explicitly_is_refused_naming_the_intact_one(
    tmp_path, reference
):
    run_dir = tmp_path / "copy"
    shutil.copytree(reference, run_dir)
    last, best = run_dir / "checkpoints" / "last.ckpt", run_dir / "checkpoints" / "best.ckpt"
    flip_bytes(last)

    refused = run_command("src.train", f"ckpt_path={last}")
    assert refused.returncode == 2
    assert "fails its CRC-32 check" in refused.stderr and f"ckpt_path={best}" in refused.stderr
    assert "Traceback" not in refused.stderr

    truncate(best)
    nothing_left = run_command("src.train", f"paths.run_dir={run_dir}", "ckpt_path=last")
    assert nothing_left.returncode == 2
    assert "No intact checkpoint is left" in nothing_left.stderr


def test_a_diverging_loss_stops_the_run_before_any_checkpoint_is_saved(tmp_path):
    run_dir = tmp_path / "run"
    diverged = train_here(run_dir, "optimizer=sgd", "optimizer.lr=1e10")

    assert diverged.returncode == 1
    assert "training diverged: the training loss became" in diverged.stderr
    assert "at epoch 0, batch" in diverged.stderr and "lower optimizer.lr" in diverged.stderr
    assert "Traceback" not in diverged.stderr
    assert not list((run_dir / "checkpoints").glob("*.ckpt"))
    assert not (run_dir / "metrics.json").exists()
    assert "training diverged" in (run_dir / "train.log").read_text()


def test_a_divergence_is_named_at_its_first_batch_though_read_later(tmp_path):
    # The guard reads the device every 16 steps (or before a checkpoint), so batch 3's NaN is
    # read after batch 15, and named as batch 3's.
    run_dir = tmp_path / "run"
    poisoned = [
        "+callbacks.poison._target_=tests.conftest.PoisonWeights",
        "+callbacks.poison.epoch=1",
        "+callbacks.poison.batch=2",
    ]
    diverged = train_here(run_dir, *poisoned)
    assert diverged.returncode == 1
    assert "the training loss became nan at epoch 1, batch 3 (optimizer step 68)" in diverged.stderr
    last = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 0  # epoch 1's checkpoints were never written


def test_a_loss_diverging_later_leaves_only_finite_checkpoints(tmp_path):
    run_dir = tmp_path / "run"
    absurd_lr_from_epoch_2 = [
        "optimizer=sgd",
        "+callbacks.lr._target_=tests.conftest.SetLearningRate",
        "+callbacks.lr.epoch=2",
        "+callbacks.lr.lr=1e10",
    ]
    diverged = train_here(run_dir, *absurd_lr_from_epoch_2)

    assert diverged.returncode == 1
    assert "the training loss became" in diverged.stderr and "at epoch 2" in diverged.stderr
    for name in ("best.ckpt", "last.ckpt"):
        checkpoint = load_checkpoint(run_dir / "checkpoints" / name)
        assert checkpoint["epoch"] <= 1, name  # written before the divergence
        for tensor in checkpoint["state_dict"].values():
            assert torch.isfinite(tensor.float()).all(), name


def limit_file_size(max_bytes: int) -> None:
    # A write past the limit then fails with EFBIG, as on a full disk, instead of a SIGXFSZ kill.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))


@pytest.mark.slow
def test_a_disk_that_fills_mid_run_keeps_the_previous_checkpoint_whole(tmp_path, reference):
    run_dir = tmp_path / "copy"
    shutil.copytree(reference, run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    before = last.read_bytes()

    resume_args = [f"paths.run_dir={run_dir}", "ckpt_path=last", "trainer.max_epochs=4"]
    full = subprocess.run(
        [sys.executable, "-m", "src.train", *resume_args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: limit_file_size(len(before) // 2),
    )
    assert full.returncode == 1, full.stderr[-3000:]
    assert "no room to write" in full.stderr and "File too large" in full.stderr
    assert "paths.output_dir" in full.stderr and "Traceback" not in full.stderr
    assert last.read_bytes() == before
    assert not list(run_dir.rglob(".*.tmp"))


def test_too_little_free_space_is_refused_before_anything_is_written(tmp_path):
    refused = run_command(
        "src.train", *RUN, f"paths.output_dir={tmp_path / 'out'}", "paths.min_free_mb=1e12"
    )
    assert refused.returncode == 2
    assert "MB free, less than paths.min_free_mb=1e+12" in refused.stderr
    assert not (tmp_path / "out").exists()


def test_an_output_directory_that_cannot_be_written_is_refused_at_start(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory\n")
    refused = run_command("src.train", *RUN, f"paths.output_dir={a_file / 'out'}")
    assert refused.returncode == 2
    assert "cannot write the run directory" in refused.stderr
    assert "Set paths.output_dir" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_a_read_only_output_directory_is_refused_at_start(tmp_path):
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o555)
    refused = run_command("src.train", *RUN, f"paths.output_dir={read_only}")
    assert refused.returncode == 2
    assert "cannot write the run directory" in refused.stderr


def test_a_run_directory_holding_a_run_is_not_overwritten(tmp_path, reference):
    run_dir = tmp_path / "copy"
    shutil.copytree(reference, run_dir)
    config_before = (run_dir / "config.yaml").read_text()

    refused = train_here(run_dir, "seed=7")
    assert refused.returncode == 2
    assert "already holds a run" in refused.stderr and "ckpt_path=last" in refused.stderr
    assert (run_dir / "config.yaml").read_text() == config_before
    assert results(run_dir) == results(reference)
