"""Truncated BPTT against full BPTT: seconds per epoch, optimizer steps and what each learns.

    python -m benchmarks.tbptt                                   # pixel MNIST, LSTM-128
    python -m benchmarks.tbptt --steps 0 112 392 --epochs 3       # 0: full BPTT
    python -m benchmarks.tbptt --steps 0 112 --epochs 5 16        # about equal time each
    python -m benchmarks.tbptt --case copy                        # copy, T = 1000, GRU

Each setting is one `python -m src.train` run in its own process at one thread. `--parallel`
runs them side by side (one core each), so a slow spell of the machine hits them alike; the
default runs them one after another. Per setting: the median seconds of a training epoch
(validation excluded), the optimizer steps of an epoch, and the test metrics of the last epoch's
weights. Pixel MNIST needs the data: SEQLAB_MNIST_MIRROR or a prepared data/mnist.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.epoch_time import QUIET, column, metrics_rows
from src.training.checkpoints import load_checkpoint

CASES = {
    # 784 steps of one pixel; the target is read at the end, so only the last chunk is trained
    # and the chunks before it run without a graph.
    "pixel": {
        "overrides": ["experiment=mnist_pixel", "model=lstm", "data.train_subset=10000"],
        "metric": "test/acc",
    },
    # 10 symbols, 1,000 blanks, a delimiter and the recall: a target on each of the last steps.
    "copy": {
        "overrides": ["data=copy", "data.lag=1000", "model=gru", "data.num_train=512"],
        "metric": "test/key_acc",
    },
}


@dataclass(frozen=True)
class Outcome:
    steps: int  # 0: full BPTT
    epoch_seconds: list[float]
    optimizer_steps: int
    metrics: dict[str, float]


def command(overrides: list[str], steps: int, epochs: int, run_dir: Path) -> list[str]:
    tbptt = [f"model.tbptt_steps={steps}"] if steps else []
    return [
        sys.executable, "-m", "src.train", *overrides, *tbptt, *QUIET, "num_threads=1",
        f"trainer.max_epochs={epochs}", "test_ckpt=last", f"paths.run_dir={run_dir}",
    ]  # fmt: skip


def outcome(steps: int, run_dir: Path) -> Outcome:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    seconds = column(metrics_rows(run_dir), "time/train_epoch_s")
    # The loggers count calls of training_step; the checkpoint counts optimizer steps.
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    return Outcome(steps, seconds, checkpoint["global_step"] // len(seconds), metrics)


def run_all(
    overrides: list[str], settings: list[int], budgets: list[int], parallel: bool, root: Path
) -> list[Outcome]:
    repo = Path(__file__).resolve().parents[1]
    processes: list[tuple[int, Path, subprocess.Popen]] = []
    try:
        for steps, epochs in zip(settings, budgets, strict=True):
            run_dir = root / f"steps{steps}"
            with open(root / f"steps{steps}.log", "w") as log:
                process = subprocess.Popen(
                    command(overrides, steps, epochs, run_dir), cwd=repo, stdout=log, stderr=log
                )
            processes.append((steps, run_dir, process))
            if not parallel and process.wait() != 0:
                break
        for _, _, process in processes:
            process.wait()
    finally:
        for _, _, process in processes:  # interrupted: no run goes on in the background
            if process.poll() is None:
                process.kill()
                process.wait()
    failed = [steps for steps, _, process in processes if process.returncode != 0]
    if failed:
        logs = "\n".join((root / f"steps{steps}.log").read_text()[-2000:] for steps in failed)
        raise RuntimeError(f"the runs with tbptt_steps={failed} failed:\n{logs}")
    return [outcome(steps, run_dir) for steps, run_dir, _ in processes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=list(CASES), default="pixel")
    parser.add_argument("--steps", nargs="+", type=int, default=[0, 112], help="0: full BPTT")
    parser.add_argument(
        "--epochs", nargs="+", type=int, default=[2], help="for every setting, or one each"
    )
    parser.add_argument("--parallel", action="store_true", help="one process per core")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    case = CASES[args.case]
    epochs = args.epochs * len(args.steps) if len(args.epochs) == 1 else args.epochs
    if len(epochs) != len(args.steps):
        parser.error(f"--epochs takes one number or one per setting ({len(args.steps)})")
    with tempfile.TemporaryDirectory() as tmp:
        outcomes = run_all(
            [*case["overrides"], *args.overrides], args.steps, epochs, args.parallel, Path(tmp)
        )
    metric = case["metric"]
    print(f"{args.case}: a thread a run, median s/epoch and all epochs' s, validation excluded")
    print(
        f"{'tbptt_steps':<14}{'epochs':>7}{'s/epoch':>10}{'ratio':>8}{'train s':>9}"
        f"{'opt. steps/epoch':>18}{metric:>16}{'test/loss':>12}"
    )
    reference = statistics.median(outcomes[0].epoch_seconds)
    for result in outcomes:
        median = statistics.median(result.epoch_seconds)
        name = str(result.steps) if result.steps else "full BPTT"
        print(
            f"{name:<14}{len(result.epoch_seconds):>7}{median:>10.2f}{median / reference:>8.2f}"
            f"{sum(result.epoch_seconds):>9.0f}{result.optimizer_steps:>18}"
            f"{result.metrics.get(metric, float('nan')):>16.4f}"
            f"{result.metrics.get('test/loss', float('nan')):>12.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
