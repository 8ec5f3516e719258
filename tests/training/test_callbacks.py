import csv
import traceback
from types import SimpleNamespace

import torch

from src.models.seeding import seed_generators
from src.training import callbacks
from src.training.run import train
from tests.conftest import QUICK, FakeClock, Ticks


def test_seeding_a_batch_draws_what_torch_manual_seed_draws_on_cpu():
    # Runs and checkpoints made before seeding skipped torch.manual_seed draw the same dropout.
    seed_generators(2**40 + 7, torch.device("cpu"))
    ours = (torch.rand(8), torch.nn.functional.dropout(torch.ones(16), 0.5))
    torch.manual_seed(2**40 + 7)
    theirs = (torch.rand(8), torch.nn.functional.dropout(torch.ones(16), 0.5))
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))


def test_seeding_a_batch_formats_no_stack_trace_for_devices_never_used(monkeypatch):
    # torch.manual_seed queues a lazy seeding call for each device API left uninitialised
    # (CUDA, XPU, MTIA), each with a formatted stack trace: 4 ms a step on CPU.
    traces = []
    monkeypatch.setattr(traceback, "format_stack", lambda *a, **k: traces.append(1) or [])
    torch.manual_seed(3)
    assert traces, "torch.manual_seed no longer formats stack traces: this test is moot"
    traces.clear()
    for batch in range(5):
        seed_generators(batch, torch.device("cpu"))
    assert traces == []


def test_the_epoch_timer_counts_training_not_validation(compose_cfg, tmp_path, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(callbacks, "time", SimpleNamespace(perf_counter=clock))
    run_dir = tmp_path / "run"
    cfg = compose_cfg(*QUICK, "steps_per_call=1", f"paths.run_dir={run_dir}")
    train(cfg, extra_callbacks=[Ticks(clock)])
    with (run_dir / "csv" / "metrics.csv").open() as handle:
        logged = [row["time/train_epoch_s"] for row in csv.DictReader(handle)]
    # 2 epochs of 7 training batches (200 sequences in batches of 32), each validated.
    assert [float(value) for value in logged if value] == [7.0, 7.0]
