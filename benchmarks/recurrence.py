"""Training-step time of torch.nn RNN/LSTM/GRU vs FastRNN on CPU.

python -m benchmarks.recurrence [--threads N] [--repeats R]
"""

import argparse
import statistics
import time

import torch
from torch import nn

from src.models.fast_rnn import FastRNN

TORCH = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
# name: (batch, steps, input, hidden, layers)
SETTINGS = {"multiplication": (32, 100, 2, 30, 2), "mnist-rows": (128, 28, 28, 128, 1)}


def step_ms(rnn: nn.Module, shape: tuple[int, ...], repeats: int, warmup: int = 5) -> float:
    b, t, i, h, _ = shape
    head = nn.Linear(h, 1)
    opt = torch.optim.Adam([*rnn.parameters(), *head.parameters()])
    x, y = torch.randn(b, t, i), torch.randn(b, 1)
    times = []
    for _ in range(warmup + repeats):
        start = time.perf_counter()
        out, _ = rnn(x)
        loss = nn.functional.mse_loss(head(out[:, -1]), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[warmup:]) * 1e3


def paired_recurrences(
    cell: str, inputs: int, hidden: int, layers: int
) -> tuple[nn.Module, FastRNN]:
    """torch.nn's recurrence and the fused one, with the same (seeded) weights."""
    torch.manual_seed(0)
    reference = TORCH[cell](inputs, hidden, layers, batch_first=True)
    fused = FastRNN(cell, inputs, hidden, layers)
    fused.load_state_dict(reference.state_dict())
    return reference, fused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats} steps")
    print(f"{'setting':<16}{'mode':<6}{'torch ms':>10}{'fast ms':>10}{'ratio':>8}")
    for name, shape in SETTINGS.items():
        _, _, i, h, layers = shape
        for mode in ("gru", "lstm", "rnn"):
            ref, fast = paired_recurrences(mode, i, h, layers)
            # Interleave so that load from other processes hits both alike.
            t_ref, t_fast = [], []
            for _ in range(3):
                t_ref.append(step_ms(ref, shape, args.repeats // 3 + 1))
                t_fast.append(step_ms(fast, shape, args.repeats // 3 + 1))
            ms_ref, ms_fast = statistics.median(t_ref), statistics.median(t_fast)
            print(f"{name:<16}{mode:<6}{ms_ref:>10.2f}{ms_fast:>10.2f}{ms_fast / ms_ref:>8.2f}")


if __name__ == "__main__":
    main()
