"""One prepared GPU check: the whole pipeline on the device, timed, in about 8 minutes on one GPU.

    python -m benchmarks.gpu_check                     # on a machine with a CUDA GPU
    python -m benchmarks.gpu_check --device cpu --smoke    # the same plan on the CPU, in seconds

It prints, per check, seconds per training epoch (the median after a warm-up epoch, validation
excluded) and the test metric:
- MNIST rows (28 steps) with GRU-128 and LSTM-128, in 32-true and bf16-mixed;
- pixel MNIST (784 steps) with LSTM-128;
- the multiplication problem's GRU (classic protocol, batch 32);
- a 2-epoch `trainer=ddp` run (every GPU of the machine, one process each);
- the time to 98 % accuracy on MNIST rows with GRU-128: training stops at the first epoch whose
  validation accuracy reaches 0.98; the line gives those epochs' training seconds and the test
  accuracy of that checkpoint.

MNIST comes from `SEQLAB_MNIST_MIRROR` (a local mirror) or the usual download. Every run but the
DDP one trains in this process, so Lightning is imported once. `--smoke` cuts every run to a few
batches and swaps DDP for `trainer=ddp_cpu` on the CPU: it checks the plan, not the speed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.epoch_time import column, metrics_rows, run_measured
from benchmarks.plain_loop import compose_config

REPO = Path(__file__).resolve().parents[1]
QUIET = ["trainer.enable_progress_bar=false", "~callbacks.model_summary", "logger=csv"]
MNIST_ROWS = ["data=mnist", "model.hidden_size=128"]
# A few batches of everything: the plan end to end, in seconds.
SMOKE = [
    "++trainer.limit_train_batches=4",
    "++trainer.limit_val_batches=2",
    "++trainer.limit_test_batches=2",
    "num_threads=1",
]


@dataclass(frozen=True)
class Check:
    name: str
    overrides: list[str]
    epochs: int
    in_process: bool = True
    until_accuracy: float | None = None
    smoke_overrides: list[str] = field(default_factory=list)


def plan(device: str) -> list[Check]:
    trainer = "trainer=gpu" if device == "cuda" else "trainer=cpu"
    ddp = "trainer=ddp" if device == "cuda" else "trainer=ddp_cpu"
    checks = []
    for cell in ("gru", "lstm"):
        for precision in ("32-true", "bf16-mixed"):
            overrides = [trainer, *MNIST_ROWS, f"model={cell}", f"trainer.precision={precision}"]
            checks.append(Check(f"mnist rows {cell}-128 {precision}", overrides, epochs=3))
    pixel = [trainer, "experiment=mnist_pixel", "model=lstm", "model.hidden_size=128"]
    checks.append(Check("mnist pixel lstm-128 32-true", pixel, epochs=2))
    checks.append(Check("multiply gru 32-true", [trainer, "data=multiply", "model=gru"], epochs=4))
    checks.append(
        Check("ddp mnist rows gru-128, 2 epochs", [ddp, *MNIST_ROWS, "model=gru"], 2, False)
    )
    until = [trainer, *MNIST_ROWS, "model=gru", "callbacks=early_stopping"]
    until += [
        "callbacks.early_stopping.patience=1000",
        "+callbacks.early_stopping.stopping_threshold=0.98",
    ]
    checks.append(Check("mnist rows gru-128 to 98 %", until, epochs=30, until_accuracy=0.98))
    return checks


@dataclass(frozen=True)
class Result:
    epoch_seconds: list[float]
    val_accuracy: list[float]
    test_metric: str
    wall_seconds: float


def read_result(run_dir: Path, wall_seconds: float) -> Result:
    rows = metrics_rows(run_dir)
    seconds, accuracy = column(rows, "time/train_epoch_s"), column(rows, "val/acc")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    key = "test/acc" if "test/acc" in metrics else "test/tolerance_accuracy"
    return Result(seconds, accuracy, f"{key.split('/')[1]} {metrics[key]:.4f}", wall_seconds)


def run_in_process(overrides: list[str]) -> None:
    from src.training.run import train

    train(compose_config(overrides))


def run_check(
    check: Check, smoke: bool, extra: list[str], mnist_extra: list[str], root: Path
) -> Result:
    run_dir = root / check.name.replace(" ", "_").replace(",", "").replace("%", "pct")
    epochs = min(check.epochs, 2) if smoke else check.epochs
    overrides = [*check.overrides, *QUIET, f"trainer.max_epochs={epochs}"]
    overrides += [f"paths.run_dir={run_dir}", *(SMOKE if smoke else []), *extra]
    if "multiply" not in check.name:
        overrides += mnist_extra
    start = time.perf_counter()
    if check.in_process:
        run_in_process(overrides)
    else:
        run_measured([sys.executable, "-m", "src.train", *overrides], REPO)
    return read_result(run_dir, time.perf_counter() - start)


def line(check: Check, result: Result) -> str:
    timed = result.epoch_seconds[1:] or result.epoch_seconds
    per_epoch = statistics.median(timed) if timed else float("nan")
    text = f"{check.name:<36}{per_epoch:>10.3f}{len(result.epoch_seconds):>8}"
    text += f"{result.wall_seconds:>10.1f}  {result.test_metric}"
    if check.until_accuracy is not None:
        reached = next(
            (i for i, acc in enumerate(result.val_accuracy) if acc >= check.until_accuracy), None
        )
        if reached is None:
            text += f"  (val acc never reached {check.until_accuracy})"
        else:
            seconds = sum(result.epoch_seconds[: reached + 1])
            epochs = reached + 1
            text += f"  (val acc {check.until_accuracy} after {epochs} epochs, {seconds:.1f} s)"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--smoke", action="store_true", help="a few batches per run")
    parser.add_argument("--only", nargs="*", help="run the checks whose name contains these")
    parser.add_argument(
        "--mnist", action="append", default=[], help="an extra override for the MNIST runs only"
    )
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.exit("seqlab: no CUDA GPU here. Fix: run on a GPU machine, or --device cpu --smoke")
        print(f"device: {torch.cuda.get_device_name()} (torch {torch.__version__})", flush=True)
    checks = [c for c in plan(args.device) if not args.only or any(o in c.name for o in args.only)]
    print(f"{'check':<36}{'s/epoch':>10}{'epochs':>8}{'wall s':>10}  test", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for check in checks:
            result = run_check(check, args.smoke, args.overrides, args.mnist, Path(tmp))
            print(line(check, result), flush=True)


if __name__ == "__main__":
    main()
