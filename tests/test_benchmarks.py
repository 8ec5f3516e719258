"""The benchmarks run end to end on tiny configs; their figures are printed, never asserted."""

import subprocess
import sys

import pytest

from tests.conftest import REPO

TINY = ["data.seq_len=10", "data.num_sequences=300", "data.num_fit=250", "num_threads=1"]


def run_benchmark(*args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.splitlines()


@pytest.mark.slow
def test_epoch_time_compares_the_pipeline_with_the_plain_loop():
    lines = run_benchmark("benchmarks.epoch_time", "--case=multiply", "--epochs=1", *TINY)
    rows = [line.split() for line in lines if line.startswith("multiply")]
    assert [row[1:-4] for row in rows] == [
        ["plain", "loop"],
        ["pipeline"],
        ["pipeline,", "fused", "RNN"],
    ]
    seconds, ratios = [float(row[-4]) for row in rows], [float(row[-1]) for row in rows]
    assert all(s > 0 for s in seconds) and ratios[0] == 1.0


@pytest.mark.slow
def test_recurrence_benchmark_covers_every_cell():
    lines = run_benchmark("benchmarks.recurrence", "--threads=1", "--repeats=1")
    cells = {line.split()[1] for line in lines if line.startswith(("multiplication", "mnist"))}
    assert cells == {"rnn", "lstm", "gru"}
