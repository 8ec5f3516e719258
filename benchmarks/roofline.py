"""How close the recurrences come to this machine's matmul rate: FLOPs per epoch, and the share
of the measured fp32 GEMM rate that a training step reaches.

    python -m benchmarks.roofline [--threads N] [--repeats R]

FLOPs count the matmuls only (the gates' elementwise work is a few percent of them): per layer
and step, forward 2 B G H (I + H) (input and recurrent products, G gates), backward twice that
(the gradients of the inputs and of the weights). An epoch is the task's training split:
2,048 sequences in batches of 32 (multiplication), 55,000 images in batches of 128 (MNIST rows).

The rate is measured, not quoted (the best of a few windows): `torch.mm` at the recurrent step's
own shape, [B x H] @ [H x G H], and at a large square shape (the machine's peak through torch),
in fp32 and, where the CPU has AVX512-BF16 or AMX, in bf16. A training step's share is its
matmul FLOPs divided by its time and by the fp32 peak; "peak s/ep" is the epoch's FLOPs at that
peak.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from benchmarks.recurrence import SETTINGS, paired_recurrences, step_ms
from src.models.sequence_model import GATES

EPOCH_SAMPLES = {"multiplication": 2048, "mnist-rows": 55_000}


def step_flops(cell: str, batch: int, steps: int, inputs: int, hidden: int, layers: int) -> float:
    total = 0.0
    for layer in range(layers):
        layer_inputs = inputs if layer == 0 else hidden
        forward = 2 * batch * steps * GATES[cell] * hidden * (layer_inputs + hidden)
        total += 3 * forward
    return total


def gemm_rate(m: int, k: int, n: int, dtype: torch.dtype, windows: int = 5) -> float:
    """GFLOP/s of torch.mm at [m x k] @ [k x n]: the best of a few 0.2 s windows, since this
    machine's speed drifts."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    for _ in range(3):
        torch.mm(a, b)
    best = 0.0
    for _ in range(windows):
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < 0.2:
            torch.mm(a, b)
            calls += 1
        best = max(best, 2 * m * k * n * calls / elapsed / 1e9)
    return best


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware; without it a 2048^3 bf16 product is
    emulated and takes minutes."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    peak = gemm_rate(2048, 2048, 2048, torch.float32)
    bf16 = "no AVX512-BF16 or AMX on this CPU: not measured"
    if native_bf16():
        bf16 = f"{gemm_rate(2048, 2048, 2048, torch.bfloat16):.0f} GFLOP/s"
    print(f"peak GEMM (2048^3): fp32 {peak:.0f} GFLOP/s, bf16 {bf16}")
    header = ["setting", "cell", "GFLOP/ep", "step GEMM", "peak s/ep", "torch", "", "fused", ""]
    print(f"{header[0]:<16}{header[1]:<6}" + "".join(f"{h:>11}" for h in header[2:]))
    print(f"{'':<22}{'':>11}{'GFLOP/s':>11}{'':>11}" + f"{'s/ep':>11}{'share':>11}" * 2)
    for name, shape in SETTINGS.items():
        batch, steps, inputs, hidden, layers = shape
        batches = math.ceil(EPOCH_SAMPLES[name] / batch)
        for cell in ("rnn", "lstm", "gru"):
            flops = step_flops(cell, batch, steps, inputs, hidden, layers)
            at_step = gemm_rate(batch, hidden, GATES[cell] * hidden, torch.float32)
            reference, fused = paired_recurrences(cell, inputs, hidden, layers)
            row = f"{name:<16}{cell:<6}{flops * batches / 1e9:>11.1f}{at_step:>11.0f}"
            row += f"{flops * batches / peak / 1e9:>11.2f}"
            for rnn in (reference, fused):
                seconds = step_ms(rnn, shape, args.repeats) / 1e3
                share = flops / seconds / (peak * 1e9)
                row += f"{seconds * batches:>11.2f}{share:>11.1%}"
            print(row, flush=True)


if __name__ == "__main__":
    main()
