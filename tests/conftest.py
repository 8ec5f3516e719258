"""What the tests share: the quick config, composing and running commands in-process, fake MNIST
files, and callbacks that stop a run as a crash, a kill or a signal would.

The quick config is the quick profile (conf/profile/quick.yaml: 2 epochs of a few batches, one
thread) on a small multiplication problem; most tests train it.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib
import io
import os
import signal
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Checkpoint
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SHARED_MNIST = REPO.parent / "shared" / "datasets" / "mnist"

# The quick profile on a small multiplication problem: 200 training, 50 validation and 50 test
# sequences of 10 steps.
QUICK = ["profile=quick", "data.seq_len=10", "data.num_sequences=300", "data.num_fit=250"]


def command(name: str, *overrides: str, with_hydra: bool = False) -> DictConfig:
    """conf/<name>.yaml composed with `overrides`, as the command of that name would; with its
    `hydra` node (sweeper, launcher) when `with_hydra`."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(name, overrides=list(overrides), return_hydra_config=with_hydra)


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose conf/train.yaml as `python -m src.train` would, with outputs under tmp_path."""

    def _compose(*overrides: str) -> DictConfig:
        return command(
            "train",
            f"paths.output_dir={tmp_path / 'outputs'}",
            f"paths.data_dir={tmp_path / 'data'}",
            "trainer.enable_progress_bar=false",
            "~callbacks.model_summary",
            *overrides,
        )

    return _compose


@dataclass(frozen=True)
class Done:
    """How a command ended: its exit status and what it printed."""

    returncode: int
    stdout: str
    stderr: str


def run_command(module: str, *args: str, cwd: Path = REPO) -> Done:
    """Run `python -m <module> <args>` in this process, as its console script does: the same
    argument parsing, exit status and output, without a new interpreter (Lightning alone takes
    seconds to import)."""
    entry = importlib.import_module(module)
    stdout, stderr = io.StringIO(), io.StringIO()
    argv, cwd_before = sys.argv, Path.cwd()
    sys.argv = [f"{module.replace('.', '/')}.py", *args]
    code: Any = 0
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                entry.cli()
            except SystemExit as done:
                code = done.code
    finally:
        sys.argv = argv
        os.chdir(cwd_before)
        GlobalHydra.instance().clear()
        # The job's config would outlive it: a later train(cfg) would take its command line.
        HydraConfig.instance().cfg = None
    status = code if isinstance(code, int) else (0 if code is None else 1)
    return Done(status, stdout.getvalue(), stderr.getvalue())


def run_cli(
    *args: str, module: str = "src.train", cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    """`python -m src.train <args>` in a process of its own: for signals, kills, DDP and the
    command line itself."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """W&B for real, offline, with every file it writes (cache, staged artifacts) under tmp."""
    home = tmp_path / "wandb_home"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(home / "netrc"))
    for variable, folder in [
        ("WANDB_CACHE_DIR", "cache"),
        ("WANDB_DATA_DIR", "data"),
        ("WANDB_CONFIG_DIR", "config"),
        ("WANDB_ARTIFACT_DIR", "artifacts"),
    ]:
        monkeypatch.setenv(variable, str(home / folder))
    return home


# Fake MNIST: small gzip IDX files whose class is learnable in seconds.

NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def learnable_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is the row that is bright: learnable in seconds, row by row."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count)
    images = rng.integers(0, 40, (count, 28, 28))
    images[np.arange(count), 2 * labels + 4, :] = 255
    return images, labels


def write_fake_mnist(folder: Path, train: int = 300, test: int = 100) -> dict[str, str]:
    """Four small gzip IDX files; returns their checksums as fetch_mnist expects them."""
    folder.mkdir(parents=True, exist_ok=True)
    train_images, train_labels = learnable_digits(train, 0)
    test_images, test_labels = learnable_digits(test, 1)
    arrays = {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
    }
    checksums = {}
    for key, array in arrays.items():
        raw = idx_bytes(array)
        (folder / NAMES[key]).write_bytes(gzip.compress(raw))
        checksums[NAMES[key]] = hashlib.sha256(raw).hexdigest()
    return checksums


@pytest.fixture
def fake_mnist(tmp_path):
    mirror = tmp_path / "mirror"
    return mirror, write_fake_mnist(mirror)


# Callbacks that stop a run at a known point; tests add them as
# `+callbacks.<name>._target_=tests.conftest.<Class>`.


class Interrupted(RuntimeError):
    pass


class InterruptAtEpoch(L.Callback):
    """Raise at the start of epoch `epoch` (0-based), after the previous epoch's checkpoints, or
    with `before_checkpoint` at the end of epoch `epoch`, before its checkpoints are written."""

    def __init__(self, epoch: int, before_checkpoint: bool = False) -> None:
        self.epoch = epoch
        self.before_checkpoint = before_checkpoint

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.before_checkpoint and trainer.current_epoch == self.epoch:
            raise Interrupted(f"interrupted at the start of epoch {self.epoch}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.before_checkpoint and trainer.current_epoch == self.epoch:
            raise Interrupted(f"interrupted at the end of epoch {self.epoch}")


class SignalAtBatch(L.Callback):
    """Send this process a real signal when training reaches call `batch` (Lightning's
    `batch_idx`, which counts calls of `steps_per_call` batches) of epoch `epoch`: the handlers
    installed for it run exactly as for a signal from outside, at a known point.
    Only in a fresh fit: the resumed run, whose config holds this callback too, goes on. With a
    `marker` file, only once (the first job of a sweep, not the next ones)."""

    def __init__(
        self,
        epoch: int,
        batch: int,
        signum: int,
        rank: int | None = None,
        marker: str | None = None,
    ) -> None:
        self.epoch = epoch
        self.batch = batch
        self.signum = signum
        self.rank = rank  # under DDP: signal only this rank (None: every rank)
        self.marker = Path(marker) if marker else None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        here = (trainer.current_epoch, batch_idx) == (self.epoch, self.batch)
        this_rank = self.rank is None or trainer.global_rank == self.rank
        if trainer.ckpt_path is None and here and this_rank and self._first():
            os.kill(os.getpid(), self.signum)

    def _first(self) -> bool:
        """Whether no job has signalled yet: the marker's exclusive creation picks one, even
        among jobs that run at once."""
        if self.marker is None:
            return True
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return False
        return True


class SetLearningRate(L.Callback):
    """Set every optimizer's learning rate to `lr` from epoch `epoch` on."""

    def __init__(self, epoch: int, lr: float) -> None:
        self.epoch = epoch
        self.lr = lr

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch >= self.epoch:
            for optimizer in trainer.optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = self.lr


class PoisonWeights(L.Callback):
    """Set every weight to NaN after batch `batch` of epoch `epoch`: the next loss is NaN. With
    `rank`, on that DDP rank alone."""

    def __init__(self, epoch: int, batch: int, rank: int | None = None) -> None:
        self.epoch = epoch
        self.batch = batch
        self.rank = rank

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if self.rank is not None and trainer.global_rank != self.rank:
            return
        if (trainer.current_epoch, idx) == (self.epoch, self.batch):
            with torch.no_grad():
                for parameter in pl_module.parameters():
                    parameter.fill_(float("nan"))


class KillAfterEpochCheckpoints(Checkpoint):
    """SIGKILL this process right after the checkpoints of epoch `epoch` are written and before
    Lightning logs that epoch's training metrics: as a Checkpoint, Lightning runs it after the
    ModelCheckpoints. Only in a fresh fit, like SignalAtBatch."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is None and trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


class SignalAtTestBatch(L.Callback):
    """Send this process a real signal at the first test batch, after training has ended; once,
    as `marker` records (the resumed run's config holds this callback too)."""

    def __init__(self, signum: int, marker: str) -> None:
        self.signum = signum
        self.marker = Path(marker)

    def on_test_batch_start(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx == 0 and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), self.signum)


class FakeClock:
    """A clock that moves only when a test moves it."""

    now = 0.0

    def __call__(self) -> float:
        return self.now


class Ticks(L.Callback):
    """1 s on the fake clock per training call; 10 s for the validation loop's setup and 10 s
    per validation batch. Goes after the timing callbacks, which see its ticks in order."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    def on_validation_start(self, *args) -> None:
        self.clock.now += 10.0

    def on_train_batch_end(self, *args) -> None:
        self.clock.now += 1.0

    def on_validation_batch_end(self, *args) -> None:
        self.clock.now += 10.0
