"""Seconds per training epoch: `python -m src.train` against a plain PyTorch loop, same config.

    python -m benchmarks.epoch_time                          # every cell on both tasks
    python -m benchmarks.epoch_time --case multiply --cells gru --epochs 20
    python -m benchmarks.epoch_time --case mnist             # needs SEQLAB_MNIST_MIRROR
    python -m benchmarks.epoch_time --case multiply data.seq_len=10   # extra Hydra overrides
    python -m benchmarks.epoch_time --processes --rounds 3   # each side in its own process

Each cell runs with torch.nn's recurrence (`model.implementation=torch`) and, on CPU, with the
fused one. By default both sides share one process and take turns epoch by epoch: a callback
runs one epoch of the plain loop (benchmarks/plain_loop.py) after each of the pipeline's
training epochs, and the pipeline's epoch counts everything but validation (its checkpoints
and log rows too). These machines' speed drifts by 10-30 % over minutes, and between processes,
so only sides measured side by side compare; the ratio is the median over epochs of the
pipeline's epoch against the plain epoch right after it: the framework's tax. `--processes`
runs each side in a process of its own instead, alternating `--rounds` times, and gives each
side's peak resident memory; there the pipeline's epoch is the run's own `time/train_epoch_s`,
which leaves out the checkpoints written at the epoch's end. Per side: the median seconds of
the epochs after the warm-up (validation excluded) and training samples per second.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import lightning as L
import torch
from omegaconf import open_dict

from benchmarks.plain_loop import PlainLoop, compose_config
from src.training.callbacks import EpochTimer
from src.training.run import train

CASES = {"multiply": ["data=multiply"], "mnist": ["data=mnist"]}
CELLS = ("rnn", "lstm", "gru")
QUIET = ["trainer.enable_progress_bar=false", "~callbacks.model_summary"]


@dataclass(frozen=True)
class Timing:
    side: str
    epoch_seconds: list[float]
    num_samples: int
    peak_rss_mb: float | None


class PlainEpochAfterEach(EpochTimer):
    """Trains one epoch of the plain loop after each of the pipeline's training epochs.

    The pipeline's epoch is all the time from the end of one plain epoch to the end of the next
    training epoch, less the validation loop (timed as EpochTimer times it): Lightning's loop
    and hooks, the steps, and the checkpoints and log rows of the epoch before, which are
    written after this callback has run."""

    def __init__(self, loop: PlainLoop, clock: Callable[[], float] | None = None) -> None:
        super().__init__(clock)
        self.loop = loop
        self.pipeline_seconds: list[float] = []
        self.plain_seconds: list[float] = []
        self._since: float | None = None

    def _now(self, pl_module: L.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)  # the work queued so far is this side's
        return self.clock()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation_seconds = 0.0  # the sanity check's, before the first epoch
        if self._since is None:
            self._since = self._now(pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert self._since is not None
        self.pipeline_seconds.append(self._now(pl_module) - self._since - self._validation_seconds)
        self.plain_seconds.append(self.loop.epoch())
        self._since = self._now(pl_module)


def time_side_by_side(
    implementation: str, overrides: list[str], device_overrides: list[str], epochs: int
) -> tuple[Timing, Timing]:
    """(plain loop, pipeline), trained in turns in this process."""
    device = torch.device("cuda" if device_overrides else "cpu")
    loop = PlainLoop(compose_config(overrides), device)
    callback = PlainEpochAfterEach(loop)
    cfg = compose_config([*overrides, *device_overrides, *QUIET, f"trainer.max_epochs={epochs}"])
    with tempfile.TemporaryDirectory() as tmp:
        with open_dict(cfg):
            cfg.paths.run_dir = str(Path(tmp) / "run")
        with contextlib.redirect_stdout(io.StringIO()):  # the run's own summary
            train(cfg, extra_callbacks=[callback])
    return (
        Timing(f"plain loop, {implementation}", callback.plain_seconds, loop.num_samples, None),
        Timing(f"pipeline, {implementation}", callback.pipeline_seconds, loop.num_samples, None),
    )


def run_measured(command: list[str], cwd: Path) -> tuple[str, float]:
    """Run a command to its end; return its stdout and its peak resident memory in MiB."""
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(command, cwd=cwd, stdout=stdout, stderr=stderr, text=True)
        # wait4 reaps this one child and reports its own resource use, not that of all children.
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0), stderr.seek(0)
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{stderr.read()[-3000:]}")
        # ru_maxrss is in KiB on Linux.
        return stdout.read(), usage.ru_maxrss / 1024


def time_plain_loop(overrides: list[str], epochs: int, device: str, repo: Path) -> Timing:
    command = [sys.executable, "-m", "benchmarks.plain_loop", f"--epochs={epochs}"]
    stdout, peak = run_measured([*command, f"--device={device}", *overrides], repo)
    result = json.loads(stdout.strip().splitlines()[-1])
    return Timing("plain loop", result["epoch_seconds"], result["num_samples"], peak)


def time_pipeline(
    side: str, overrides: list[str], epochs: int, num_samples: int, repo: Path
) -> Timing:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        command = [sys.executable, "-m", "src.train", *overrides, *QUIET]
        command += [f"trainer.max_epochs={epochs}", f"paths.run_dir={run_dir}"]
        _, peak = run_measured(command, repo)
        seconds = column(metrics_rows(run_dir), "time/train_epoch_s")
    return Timing(side, seconds, num_samples, peak)


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    """The rows of a run's csv/metrics.csv."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def column(rows: list[dict[str, str]], key: str) -> list[float]:
    """The values of `key` in the rows that have one (each metric has its own rows)."""
    return [float(row[key]) for row in rows if row.get(key)]


def merge(timings: list[Timing], warmup: int) -> Timing:
    """One side's rounds as one: their timed epochs together, the largest peak memory."""
    seconds = [s for timing in timings for s in timing.epoch_seconds[warmup:]]
    peaks = [timing.peak_rss_mb for timing in timings if timing.peak_rss_mb is not None]
    peak = max(peaks) if peaks else None
    return Timing(timings[0].side, [0.0] * warmup + seconds, timings[0].num_samples, peak)


def tax(plain: Timing, pipeline: Timing, warmup: int, paired: bool) -> float:
    """The pipeline's epoch against the plain loop's: the median of the ratios of epochs trained
    one after the other when `paired`, else the ratio of the medians."""
    plain_seconds, seconds = plain.epoch_seconds[warmup:], pipeline.epoch_seconds[warmup:]
    if paired:
        return statistics.median(p / q for p, q in zip(seconds, plain_seconds, strict=True))
    return statistics.median(seconds) / statistics.median(plain_seconds)


def report(case: str, pairs: list[tuple[Timing, Timing]], warmup: int, paired: bool) -> None:
    for plain, pipeline in pairs:
        for timing, ratio in ((plain, 1.0), (pipeline, tax(plain, pipeline, warmup, paired))):
            median = statistics.median(timing.epoch_seconds[warmup:])
            peak = "-" if timing.peak_rss_mb is None else f"{timing.peak_rss_mb:.0f}"
            print(
                f"{case:<14}{timing.side:<24}{median:>10.3f}{timing.num_samples / median:>12,.0f}"
                f"{peak:>10}{ratio:>8.2f}",
                flush=True,
            )


def time_in_processes(
    implementation: str, overrides: list[str], args: argparse.Namespace, repo: Path
) -> tuple[Timing, Timing]:
    """(plain loop, pipeline), each in a process of its own, alternating `args.rounds` times."""
    epochs = args.warmup + args.epochs
    device_overrides = ["trainer=gpu"] if args.device == "cuda" else []
    rounds: list[tuple[Timing, Timing]] = []
    # Alternated, so that a slow spell of the machine hits both sides alike.
    for _ in range(args.rounds):
        plain = time_plain_loop(overrides, epochs, args.device, repo)
        side = f"pipeline, {implementation}"
        pipeline = time_pipeline(
            side, [*overrides, *device_overrides], epochs, plain.num_samples, repo
        )
        rounds.append((replace(plain, side=f"plain loop, {implementation}"), pipeline))
    plain, pipeline = (merge([r[i] for r in rounds], args.warmup) for i in (0, 1))
    return plain, pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--cells", nargs="+", choices=CELLS, default=list(CELLS))
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs, after the warm-up")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--processes", action="store_true", help="each side in its own process (peak memory)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="with --processes: alternations of the two sides"
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both sides")
    args = parser.parse_args()
    repo = Path(__file__).resolve().parents[1]
    device_overrides = ["trainer=gpu"] if args.device == "cuda" else []
    implementations = ["torch", "fused"] if args.device == "cpu" else ["torch"]
    if args.processes:
        print(
            f"median of {args.epochs} epochs after {args.warmup} warm-up in each of "
            f"{args.rounds} alternating round(s) of two processes, validation excluded"
        )
    else:
        print(
            f"median of {args.epochs} epochs after {args.warmup} warm-up, the two sides in turns "
            "in one process, validation excluded; ratio: median of the epochs' ratios"
        )
    print(f"{'case':<14}{'side':<24}{'s/epoch':>10}{'samples/s':>12}{'peak MB':>10}{'ratio':>8}")
    for case in CASES if args.case == "all" else [args.case]:
        for cell in args.cells:
            pairs = []
            for implementation in implementations:
                overrides = [*CASES[case], f"model={cell}", *args.overrides]
                overrides.append(f"model.implementation={implementation}")
                if args.processes:
                    pairs.append(time_in_processes(implementation, overrides, args, repo))
                else:
                    epochs = args.warmup + args.epochs
                    pairs.append(
                        time_side_by_side(implementation, overrides, device_overrides, epochs)
                    )
            report(f"{case} {cell}", pairs, args.warmup, paired=not args.processes)


if __name__ == "__main__":
    main()
