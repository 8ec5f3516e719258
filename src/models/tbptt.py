"""Truncated backpropagation through time (TBPTT).

TBPTT splits each batch of sequences into chunks of K steps. The recurrent state carries from
one chunk to the next, detached, so no gradient reaches further back than the chunk it starts
in, and the optimizer steps once per chunk that has a target. With K equal to the length there
is one chunk: exactly full backpropagation through time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from src.models.losses import counted_steps

LossFn = Callable[[Tensor, Tensor, Tensor | None], Tensor]


def _detached(state: Tensor | tuple[Tensor, ...]) -> Tensor | tuple[Tensor, ...]:
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def train_in_chunks(
    net: nn.Module,
    batch: dict[str, Tensor],
    steps: int,
    loss_fn: LossFn,
    optimize: Callable[[Tensor], None],
) -> tuple[Tensor, Tensor]:
    """Train `net` (a SequenceModel) on `batch` chunk by chunk, `optimize(loss)` once per chunk
    that has a target. Returns the outputs (detached: every step's, or the last step's) and the
    batch's loss over all its counted steps (detached), for the epoch's figures."""
    x = batch["x"]
    length = x.size(1)
    if not 1 <= steps <= length:
        raise ValueError(f"model.tbptt_steps={steps} must be in [1, {length}], the sequence length")
    every_step = getattr(net, "head_mode", "last") == "every_step"
    if not every_step and "lengths" in batch:
        raise ValueError(
            "truncated BPTT with model.head=last needs sequences of one length: the target is "
            "read at each sequence's own end. Use a fixed-length variant of the task."
        )
    mask = batch.get("mask")
    state = None
    outputs: list[Tensor] = []
    total = torch.zeros((), device=x.device)
    starts = range(0, length, steps)
    for start in starts:
        chunk = slice(start, start + steps)
        last_chunk = start == starts[-1]
        if not every_step and not last_chunk:
            # No target before the sequence's end: these chunks only carry the state.
            with torch.no_grad():
                _, state = net.forward_chunk(x[:, chunk], state)
            continue
        output, state = net.forward_chunk(x[:, chunk], state)
        state = _detached(state)
        if every_step:
            chunk_mask = mask[:, chunk] if mask is not None else None
            loss = loss_fn(output, batch["y"][:, chunk], chunk_mask)
            counted = chunk_mask.sum() if chunk_mask is not None else output[..., 0].numel()
            total = total + loss.detach() * counted
            outputs.append(output.detach())
        else:
            loss = loss_fn(output[:, -1], batch["y"], None)
            total = loss.detach()
            outputs.append(output[:, -1].detach())
        optimize(loss)
    if not every_step:
        return outputs[-1], total
    return torch.cat(outputs, dim=1), total / torch.as_tensor(counted_steps(batch)).clamp(min=1)
