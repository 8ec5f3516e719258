import traceback

import torch

from src.models.seeding import seed_generators


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
