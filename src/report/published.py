"""Each task as the report shows it, and the published figures our runs are set beside."""

from __future__ import annotations

from dataclasses import dataclass, field

H97 = "Hochreiter & Schmidhuber 1997"


@dataclass(frozen=True)
class PublishedFigure:
    text: str  # as printed in the report, in percent
    source: str


@dataclass(frozen=True)
class Task:
    title: str
    metric: str  # the test metric the published figures report, as a fraction
    rule: str  # what that metric counts as correct
    extra: str  # a second test metric, in the list of runs
    published: dict[str, PublishedFigure] = field(default_factory=dict)  # by cell
    # The source's own success criterion, where it is every test sequence right (a score of
    # exactly 1): the report counts the seeds that meet it.
    criterion: str | None = None


NO_FIGURE = PublishedFigure("-", "no published figure for this cell")

# The figures are checked against the sources' own text: the 1997 paper's tables (its Table 8 is
# the multiplication problem: 139 and 14 wrong of 2,560 test sequences at |error| > 0.04, means
# of 10 trials, for two stopping criteria).
TASKS: dict[str, Task] = {
    "multiply": Task(
        "Multiplication problem",
        "test/tolerance_accuracy",
        "|error| <= 0.04",
        "test/mse",
        {
            "rnn": PublishedFigure("9-30%", "Keras SimpleRNN, classic protocol"),
            "lstm": PublishedFigure(
                "94.8-95.9% (1997 paper: 99.45%)",
                f"Keras LSTM, classic protocol; {H97}, Table 8 (14 wrong of 2,560)",
            ),
            "gru": PublishedFigure("98.9-99.3%", "Keras GRU, classic protocol"),
        },
    ),
    "mnist": Task(
        "Sequential MNIST, row by row",
        "test/acc",
        "the digit's class",
        "test/loss",
        {"rnn": PublishedFigure("97.27%", "vanilla RNN, 128 units, row by row")},
    ),
    "adding": Task(
        "Adding problem (1997, experiment 4)",
        "test/tolerance_accuracy",
        "|error| < 0.04 at the end",
        "test/mse",
        {"lstm": PublishedFigure("99.96% (1 wrong of 2,560, T = 100)", f"{H97}, Table 7")},
        criterion="every test sequence within 0.04",
    ),
    "temporal_order": Task(
        "Temporal order (1997, experiment 6a)",
        "test/probability_error_accuracy",
        "every output within 0.3 of its target",
        "test/acc",
        {"lstm": PublishedFigure("99.96% (1 wrong of 2,560; 6b: 2 of 2,560)", f"{H97}, Table 9")},
        criterion="every output of every test sequence within 0.3",
    ),
    "reber": Task(
        "Embedded Reber grammar (1997, experiment 1)",
        "test/sequence_acc",
        "every step's possible next symbols the most active units",
        "test/key_acc",
        {
            "lstm": PublishedFigure(
                "all strings right in 97-100% of trials", f"{H97}, Table 1 (LSTM rows)"
            ),
            "rnn": PublishedFigure(
                "Elman net: 0% of trials; RTRL: some fraction", f"{H97}, Table 1"
            ),
        },
        criterion="every step of every test string right",
    ),
    "copy": Task(
        "Copy memory (Arjovsky, Shah & Bengio 2016)",
        "test/key_acc",
        "recalled symbols right",
        "test/loss",
        criterion="every recalled symbol of every test sequence right",
    ),
    "chars": Task(
        "Next-character prediction",
        "test/acc",
        "next character right",
        "test/bits_per_symbol",
        criterion="every next character of the test text right",
    ),
}
