"""Stop training politely on SIGTERM or SIGINT: finish the batch, save, exit non-zero.

Clusters send SIGTERM before they kill a job, and Ctrl+C sends SIGINT. Either way the run saves
`checkpoints/last.ckpt` at the end of the batch in progress, mid-epoch included, and stops with a
message that says how to resume; `ckpt_path=last` then continues exactly where it stopped (the
batch order and the epoch's metric sums are in the checkpoint). A second Ctrl+C stops at once,
without saving. Under DDP all ranks stop after the same batch: they agree every 16 batches and at
an epoch's last (agreeing is a collective that waits for the devices), so a signal takes effect
up to 15 batches later.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L

from src.data.in_memory import batches_trained
from src.training.callbacks import READ_EVERY_N_STEPS, read_due

log = logging.getLogger("seqlab")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(Exception):
    """A SIGTERM or SIGINT stopped training after a checkpoint was saved."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class GracefulStop(L.Callback):
    def __init__(
        self,
        checkpoint_path: Path,
        resume_command: str,
        read_every_n_steps: int = READ_EVERY_N_STEPS,
    ) -> None:
        self.checkpoint_path = checkpoint_path
        self.read_every_n_steps = read_every_n_steps
        self.resume_command = resume_command
        self.received: int | None = None
        self._previous_handlers: dict[int, Any] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Replaces Lightning's SIGTERM handler too, which would stop mid-validation without saving.
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set signal handlers
        for signum in STOP_SIGNALS:
            self._previous_handlers[signum] = signal.getsignal(signum)
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl+C: stop now
        self.received = signum
        log.warning(
            "received %s: stopping after this batch and saving %s (Ctrl+C again stops at once, "
            "without saving)",
            signal_name(signum),
            self.checkpoint_path,
        )

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not self._stop_now(trainer, batch_idx):
            return
        trainer.save_checkpoint(self.checkpoint_path)
        batch = batches_trained(trainer, batch_idx) - 1
        self._stop(trainer, f"epoch {trainer.current_epoch}, batch {batch}")

    def _stop_now(self, trainer: L.Trainer, batch_idx: int) -> bool:
        if trainer.world_size == 1:
            return self.received is not None
        # Every rank must stop after the same batch: a signal to any rank stops them all. The
        # ranks agree by a collective, which waits for the devices, so only every few batches.
        due = read_due(trainer, batch_idx, self.read_every_n_steps)
        if not due and not _is_last_batch(trainer):
            return False
        return trainer.strategy.reduce_boolean_decision(self.received is not None, all=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()
        if self.received is not None:
            # Received during the last validation: the epoch's checkpoints are already written.
            self._stop(trainer, f"the end of epoch {trainer.current_epoch - 1}")

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore_handlers()

    def _stop(self, trainer: L.Trainer, where: str) -> None:
        signum = self.received if self.received is not None else signal.SIGTERM
        raise RunInterrupted(
            f"stopped by {signal_name(signum)} after {where} (step {trainer.global_step}); saved "
            f"{self.checkpoint_path}. Resume with: {self.resume_command}",
            signum,
        )

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}


def _is_last_batch(trainer: L.Trainer) -> bool:
    return bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)
