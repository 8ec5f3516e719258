"""The benchmarks run end to end on tiny configs; their figures are printed, never asserted."""

import subprocess
import sys

import pytest

from benchmarks.epoch_time import PlainEpochAfterEach
from src.training.run import train
from tests.conftest import QUICK, REPO, FakeClock, Ticks, write_fake_mnist

TINY = ["data.seq_len=10", "data.num_sequences=300", "data.num_fit=250", "num_threads=1"]


def run_benchmark(*args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.splitlines()


@pytest.mark.slow
@pytest.mark.parametrize("mode", [[], ["--processes"]], ids=["in turns", "in processes"])
def test_epoch_time_compares_the_pipeline_with_the_plain_loop_per_recurrence(mode):
    lines = run_benchmark(
        "benchmarks.epoch_time", "--case=multiply", "--cells", "gru", "--epochs=2", *mode, *TINY
    )
    rows = [line.split() for line in lines if line.startswith("multiply gru")]
    assert [" ".join(row[2:-4]) for row in rows] == [
        "plain loop, torch",
        "pipeline, torch",
        "plain loop, fused",
        "pipeline, fused",
    ]
    seconds, ratios = [float(row[-4]) for row in rows], [float(row[-1]) for row in rows]
    assert all(s > 0 for s in seconds) and ratios[0] == ratios[2] == 1.0


class FakePlainLoop:
    """An epoch of the plain loop that takes 100 s on the fake clock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    def epoch(self) -> float:
        self.clock.now += 100.0
        return 100.0


def test_in_turns_the_pipelines_epoch_is_its_training_alone(compose_cfg, tmp_path):
    clock = FakeClock()
    turns = PlainEpochAfterEach(FakePlainLoop(clock), clock=clock)
    cfg = compose_cfg(*QUICK, "steps_per_call=1", f"paths.run_dir={tmp_path / 'run'}")
    train(cfg, extra_callbacks=[turns, Ticks(clock)])
    # 2 epochs of 7 training batches (200 sequences in batches of 32); validation (the sanity
    # check's too) and the plain epochs fall outside the pipeline's.
    assert turns.pipeline_seconds == [7.0, 7.0]
    assert turns.plain_seconds == [100.0, 100.0]


@pytest.mark.slow
def test_recurrence_benchmark_covers_every_cell():
    lines = run_benchmark("benchmarks.recurrence", "--threads=1", "--repeats=1")
    cells = {line.split()[1] for line in lines if line.startswith(("multiplication", "mnist"))}
    assert cells == {"rnn", "lstm", "gru"}


@pytest.mark.slow
def test_the_gpu_check_runs_its_whole_plan_on_the_cpu(tmp_path):
    checksums = write_fake_mnist(tmp_path / "mirror")
    digests = ", ".join(f"{name}: {digest}" for name, digest in checksums.items())
    mnist = [f"data.local_mirror={tmp_path / 'mirror'}", f"data.checksums={{{digests}}}"]
    mnist += ["data.val_size=50", "data.batch_size=50"]
    lines = run_benchmark(
        "benchmarks.gpu_check",
        "--device=cpu",
        "--smoke",
        *(f"--mnist={override}" for override in mnist),
        f"paths.data_dir={tmp_path / 'data'}",
    )
    names = [
        "mnist rows gru-128 32-true",
        "mnist rows gru-128 bf16-mixed",
        "mnist rows lstm-128 32-true",
        "mnist rows lstm-128 bf16-mixed",
        "mnist pixel lstm-128 32-true",
        "multiply gru 32-true",
        "ddp mnist rows gru-128, 2 epochs",
        "mnist rows gru-128 to 98 %",
    ]
    rows = {name: line for line in lines for name in names if line.startswith(name)}
    assert list(rows) == names
    for line in rows.values():
        seconds, epochs = line[36:].split()[:2]
        assert float(seconds) > 0 and int(epochs) >= 1, line
        assert " acc " in line or " tolerance_accuracy " in line, line
    assert "val acc" in rows["mnist rows gru-128 to 98 %"]


@pytest.mark.slow
def test_the_tbptt_benchmark_sets_truncation_beside_full_bptt(tmp_path):
    tiny_copy = ["data.lag=6", "data.to_copy=2", "data.num_train=64", "data.num_val=16"]
    tiny_copy += ["data.num_test=16", "data.batch_size=32", f"paths.data_dir={tmp_path}"]
    lines = run_benchmark(
        "benchmarks.tbptt", "--case=copy", "--steps", "0", "5", "--epochs=1", *tiny_copy
    )
    rows = {line.split()[0]: line.split() for line in lines if line.startswith(("full", "5 "))}
    assert set(rows) == {"full", "5"}
    # 2 batches an epoch; 2 + 6 + 2 = 10 steps in chunks of 5, each chunk with a target.
    assert int(rows["full"][-3]) == 2 and int(rows["5"][-3]) == 4
