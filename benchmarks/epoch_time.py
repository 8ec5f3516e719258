"""Seconds per training epoch: `python -m src.train` against a plain PyTorch loop, same config.

    python -m benchmarks.epoch_time                          # every cell on both tasks
    python -m benchmarks.epoch_time --case multiply --cells gru --epochs 5
    python -m benchmarks.epoch_time --case mnist             # needs SEQLAB_MNIST_MIRROR
    python -m benchmarks.epoch_time --case multiply data.seq_len=10   # extra Hydra overrides

Each side runs in its own process: the plain loop (benchmarks/plain_loop.py) and the pipeline,
each with torch.nn's recurrence (`model.implementation=torch`) and, on CPU, with the fused one.
Per side: the median seconds of the epochs after the warm-up (validation excluded), training
samples per second, the process's peak resident memory, and the ratio to the plain loop that
runs the same recurrence: the framework's tax.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

CASES = {"multiply": ["data=multiply"], "mnist": ["data=mnist"]}
CELLS = ("rnn", "lstm", "gru")
QUIET = ["trainer.enable_progress_bar=false", "~callbacks.model_summary"]


@dataclass(frozen=True)
class Timing:
    side: str
    epoch_seconds: list[float]
    num_samples: int
    peak_rss_mb: float


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
    peak = max(timing.peak_rss_mb for timing in timings)
    return Timing(timings[0].side, [0.0] * warmup + seconds, timings[0].num_samples, peak)


def report(case: str, pairs: list[tuple[Timing, Timing]], warmup: int) -> None:
    for plain, pipeline in pairs:
        reference = statistics.median(plain.epoch_seconds[warmup:])
        for timing in (plain, pipeline):
            median = statistics.median(timing.epoch_seconds[warmup:])
            print(
                f"{case:<14}{timing.side:<24}{median:>10.3f}{timing.num_samples / median:>12,.0f}"
                f"{timing.peak_rss_mb:>10.0f}{median / reference:>8.2f}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--cells", nargs="+", choices=CELLS, default=list(CELLS))
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs, after the warm-up")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1, help="alternations of the two sides")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both sides")
    args = parser.parse_args()
    repo = Path(__file__).resolve().parents[1]
    epochs = args.warmup + args.epochs
    device = ["trainer=gpu"] if args.device == "cuda" else []
    implementations = ["torch", "fused"] if args.device == "cpu" else ["torch"]
    print(
        f"median of {args.epochs} epochs after {args.warmup} warm-up in each of {args.rounds} "
        "alternating round(s), validation excluded"
    )
    print(f"{'case':<14}{'side':<24}{'s/epoch':>10}{'samples/s':>12}{'peak MB':>10}{'ratio':>8}")
    for case in CASES if args.case == "all" else [args.case]:
        for cell in args.cells:
            pairs = []
            for implementation in implementations:
                overrides = [*CASES[case], f"model={cell}", *args.overrides]
                overrides.append(f"model.implementation={implementation}")
                rounds: list[tuple[Timing, Timing]] = []
                # Alternated, so that a slow spell of the machine hits both sides alike.
                for _ in range(args.rounds):
                    plain = time_plain_loop(overrides, epochs, args.device, repo)
                    side = f"pipeline, {implementation}"
                    pipeline = time_pipeline(
                        side, [*overrides, *device], epochs, plain.num_samples, repo
                    )
                    rounds.append((replace(plain, side=f"plain loop, {implementation}"), pipeline))
                pairs.append(tuple(merge([r[i] for r in rounds], args.warmup) for i in (0, 1)))
            report(f"{case} {cell}", pairs, args.warmup)


if __name__ == "__main__":
    main()
