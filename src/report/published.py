"""The published figures our runs are set beside, with where they come from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClassicFigure:
    text: str  # as printed in the report, in percent
    source: str


# Test correctness (|error| <= 0.04) on the multiplication problem, classic protocol (Keras,
# two layers of 30 units, 100 epochs), and sequential MNIST read row by row.
CLASSIC: dict[tuple[str, str], ClassicFigure] = {
    ("multiply", "rnn"): ClassicFigure("9-30%", "Keras SimpleRNN, classic protocol"),
    ("multiply", "lstm"): ClassicFigure(
        "94.8-95.9% (1997 paper: 99.45%)", "Keras LSTM; Hochreiter & Schmidhuber 1997, exp. 5"
    ),
    ("multiply", "gru"): ClassicFigure("98.9-99.3%", "Keras GRU, classic protocol"),
    ("mnist", "rnn"): ClassicFigure("97.27%", "vanilla RNN, 128 units, row by row"),
}

NO_FIGURE = ClassicFigure("-", "no classic figure for this cell")

TASK_TITLES = {
    "multiply": "Multiplication problem: test correctness (|error| <= 0.04)",
    "mnist": "Sequential MNIST, row by row: test accuracy",
}

# The metric of each task that the classic figures report, as a fraction.
HEADLINE_METRIC = {"multiply": "test/tolerance_accuracy", "mnist": "test/acc"}
