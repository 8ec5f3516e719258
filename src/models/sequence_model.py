"""A recurrent encoder (vanilla RNN, LSTM or GRU) with a linear head on the last step, or on
every step.

A plain `nn.Module`: it knows input and output sizes, nothing of tasks, losses or training.
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
from omegaconf import DictConfig, open_dict
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from src.config.checks import CELLS as CELL_NAMES
from src.config.checks import CHRONO_MIN_LAG, HEADS, IMPLEMENTATIONS, INITS

Cell = Literal["rnn", "lstm", "gru"]
Head = Literal["last", "every_step"]
# The recurrent state between chunks of a sequence: h [L, B, H], or (h, c) for the LSTM.
State = Tensor | tuple[Tensor, Tensor]
CELLS: dict[str, type[nn.RNNBase]] = dict(zip(CELL_NAMES, (nn.RNN, nn.LSTM, nn.GRU), strict=True))
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


class SequenceModel(nn.Module):
    def __init__(
        self,
        cell: Cell,
        input_size: int,
        output_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
        init: Literal["keras", "chrono", "torch"] = "keras",
        implementation: Literal["torch", "fused"] = "torch",
        head: Head = "last",
        chrono_max_lag: int | None = None,
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; available: {', '.join(HEADS)}")
        if head == "every_step" and bidirectional:
            raise ValueError("head=every_step reads each step as it comes: not bidirectional")
        self.head_mode = head
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; available: {', '.join(CELLS)}")
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"unknown implementation {implementation!r}; available: torch, fused")
        # The fused loops are unidirectional; a bidirectional stack takes torch's kernels, as
        # FastRNN itself does off the CPU. Either way the arithmetic is the same.
        if implementation == "fused" and not bidirectional:
            from src.models.fast_rnn import FastRNN

            self.rnn: nn.Module = FastRNN(cell, input_size, hidden_size, num_layers, dropout)
        else:
            self.rnn = CELLS[cell](
                input_size,
                hidden_size,
                num_layers,
                batch_first=True,
                # torch only drops out between layers; asking for it with one layer only warns.
                dropout=dropout if num_layers > 1 else 0.0,
                bidirectional=bidirectional,
            )
        self.cell = cell
        self.num_directions = 2 if bidirectional else 1
        self.head = nn.Linear(hidden_size * self.num_directions, output_size)
        if init == "keras":
            keras_init(self, cell)
        elif init == "chrono":
            if chrono_max_lag is None or chrono_max_lag < CHRONO_MIN_LAG:
                raise ValueError(
                    f"init=chrono needs chrono_max_lag >= {CHRONO_MIN_LAG}, the longest lag to "
                    f"bridge in steps (got {chrono_max_lag})"
                )
            chrono_init(self, cell, chrono_max_lag)
        elif init != "torch":
            raise ValueError(f"unknown init {init!r}; available: {', '.join(INITS)}")

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """x: [batch, steps, features]; lengths: valid steps per sequence, or None if all are.

        Returns [batch, outputs] (head=last) or [batch, steps, outputs] (head=every_step, where
        the outputs past a sequence's length are whatever the padding gives: mask them)."""
        if self.head_mode == "every_step":
            return self.forward_chunk(x)[0]
        if self.num_directions == 2 and lengths is not None:
            # The backward direction must start at each sequence's own last step: pack.
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            _, state = self.rnn(packed)
            h_n = state[0] if isinstance(state, tuple) else state
            return self.head(torch.cat([h_n[-2], h_n[-1]], dim=-1))
        if self.cell == "lstm" and x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            output, state = _lstm_under_cpu_autocast(self.rnn, x)
        else:
            output, state = self.rnn(x)
        if self.num_directions == 2:
            h_n = state[0] if isinstance(state, tuple) else state
            return self.head(torch.cat([h_n[-2], h_n[-1]], dim=-1))
        if lengths is None:
            return self.head(output[:, -1])
        # A unidirectional layer never looks ahead, so the output at each sequence's last valid
        # step ignores the padding after it: no packing needed.
        last = (lengths - 1).to(output.device).view(-1, 1, 1).expand(-1, 1, output.size(-1))
        return self.head(output.gather(1, last).squeeze(1))

    def forward_chunk(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One chunk of a longer sequence (truncated BPTT), from the state the previous chunk
        ended in (None: zeros). Returns the head's output at every step and the final state."""
        if self.num_directions == 2:
            raise ValueError("a bidirectional model reads whole sequences, not chunks")
        if state is None:
            if self.cell == "lstm" and x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
                output, state = _lstm_under_cpu_autocast(self.rnn, x)
            else:
                output, state = self.rnn(x)
        else:
            output, state = self.rnn(x, state)
        return self.head(output), state

    def head_at(self, outputs: Tensor, lengths: Tensor | None) -> Tensor:
        """head=last from every step's outputs [B, T, O]: the output at each sequence's end."""
        if lengths is None:
            return outputs[:, -1]
        last = (lengths - 1).to(outputs.device).view(-1, 1, 1).expand(-1, 1, outputs.size(-1))
        return outputs.gather(1, last).squeeze(1)


@functools.cache
def _cpu_autocast_lstm_works() -> bool:
    """Whether oneDNN has a reduced-precision LSTM on this CPU (it needs AVX512-BF16 or AMX)."""
    lstm = nn.LSTM(2, 2, batch_first=True)
    try:
        with torch.autocast("cpu"), torch.no_grad():
            lstm(torch.zeros(1, 2, 2))
    except RuntimeError:
        return False
    return True


def _lstm_under_cpu_autocast(rnn: nn.Module, x: Tensor) -> tuple[Tensor, object]:
    if _cpu_autocast_lstm_works():
        return rnn(x)
    with torch.autocast("cpu", enabled=False):  # the recurrence in float32, the rest as asked
        return rnn(x.float())


def keras_init(model: SequenceModel, cell: str) -> None:
    """Keras defaults: Glorot-uniform input kernels, orthogonal recurrent kernels, zero biases,
    LSTM forget-gate bias 1; Glorot-uniform head with zero bias."""
    hidden_size = model.head.in_features // model.num_directions
    for name, param in model.rnn.named_parameters():
        if name.startswith("weight_ih"):
            nn.init.xavier_uniform_(param)
        elif name.startswith("weight_hh"):
            # Keras draws one orthogonal [hidden, gates * hidden] kernel for all gates together;
            # torch stores its transpose, so W^T W = I. Per-gate orthogonal blocks would make
            # every gate's recurrent weights sqrt(gates) times larger than Keras's.
            nn.init.orthogonal_(param)
        elif name.startswith("bias"):
            nn.init.zeros_(param)
            # torch keeps two biases per gate; Keras has one, so the forget bias goes on one.
            if cell == "lstm" and name.startswith("bias_ih"):
                param.data[hidden_size : 2 * hidden_size] = 1.0
    nn.init.xavier_uniform_(model.head.weight)
    nn.init.zeros_(model.head.bias)


def chrono_init(model: SequenceModel, cell: Cell, max_lag: int) -> None:
    """Keras's init, with the gate biases of chrono initialisation (Tallec & Ollivier 2018, "Can
    recurrent neural networks warp time?"): with no input, each unit starts out keeping its state
    for 1 / (1 - sigmoid(log u)) = 1 + u steps, u ~ U(1, max_lag - 1), uniform between 2 and
    `max_lag`. So a long lag is bridged from the first update, instead of only once the forget
    (GRU: update) gate has learned to stay open. LSTM: forget bias log u, input bias -log u; GRU:
    update-gate bias log u (torch's GRU keeps the old state where its update gate is 1). A
    vanilla RNN has no gate: it gets Keras's init alone."""
    keras_init(model, cell)
    if cell == "rnn":
        return
    hidden_size = model.rnn.hidden_size
    forget_or_update = slice(hidden_size, 2 * hidden_size)  # torch's gate order: i f g o; r z n
    with torch.no_grad():
        for name, bias in model.rnn.named_parameters():
            if name.startswith("bias_ih"):
                log_time = torch.empty(hidden_size).uniform_(1, max_lag - 1).log()
                bias[forget_or_update] = log_time
                if cell == "lstm":
                    bias[:hidden_size] = -log_time


# Keys of the model config that say how to train the model, not what it is.
TRAINING_KEYS = ("tbptt_steps",)


def network_config(model: DictConfig) -> DictConfig:
    """The model config without its training keys: what SequenceModel is built from."""
    network = model.copy()
    with open_dict(network):
        for key in TRAINING_KEYS:
            network.pop(key, None)
    return network


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def keras_parameter_count(
    cell: str, input_size: int, hidden_size: int, num_layers: int, output_size: int
) -> int:
    """What Keras reports for the same stack (one bias per gate, GRU with reset_after), for
    comparing with the classic figures."""
    gates = GATES[cell]
    total, in_size = 0, input_size
    for _ in range(num_layers):
        biases = 2 if cell == "gru" else 1
        total += gates * hidden_size * (in_size + hidden_size + biases)
        in_size = hidden_size
    return total + (hidden_size + 1) * output_size
