"""The report's PNG figures: learning curves per task, predictions against targets."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from src.report.runs import Run
from src.tracking.plots import save_figure

COLOURS = {"rnn": "tab:red", "lstm": "tab:blue", "gru": "tab:green"}
# Per task: the validation column to draw and whether its axis is logarithmic; others: val/loss.
VALIDATION = {"multiply": ("val/mse", True), "mnist": ("val/acc", False)}


def learning_curves(runs: list[Run], task: str, path: Path) -> None:
    """Training loss and the validation metric per epoch: a row per protocol, one line per run,
    a colour per cell."""
    column, log_scale = VALIDATION.get(task, ("val/loss", True))
    protocols = list(dict.fromkeys(run.protocol for run in runs))
    figure, rows = plt.subplots(
        len(protocols), 2, figsize=(10, 3.6 * len(protocols)), squeeze=False
    )
    for (left, right), protocol in zip(rows, protocols, strict=True):
        labelled: set[str] = set()
        for run in (r for r in runs if r.protocol == protocol):
            label = None if run.cell in labelled else run.cell
            labelled.add(run.cell)
            for axes, name in ((left, "train/loss"), (right, column)):
                points = run.curve(name)
                if points:
                    epochs, values = zip(*points, strict=True)
                    axes.plot(epochs, values, color=COLOURS.get(run.cell), alpha=0.8, label=label)
        left.set(xlabel="epoch", ylabel="training loss", yscale="log",
                 title=f"{protocol} protocol: training loss")  # fmt: skip
        right.set(xlabel="epoch", ylabel=column, title=f"{protocol} protocol: validation")
        if log_scale:
            right.set_yscale("log")
        for axes in (left, right):
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        left.legend(title="cell")
    figure.suptitle(f"{task}: learning curves (one line per seed)")
    figure.tight_layout()
    save_figure(figure, path, dpi=110)


def predictions_vs_targets(
    predictions: dict[str, tuple[Tensor, Tensor]], tolerance: float, path: Path
) -> None:
    """Test predictions against targets per cell; inside the band a prediction counts as correct."""
    figure, panels = plt.subplots(1, len(predictions), figsize=(4 * len(predictions), 4))
    panels = panels if len(predictions) > 1 else [panels]
    for axes, (cell, (predicted, target)) in zip(panels, predictions.items(), strict=True):
        predicted, target = predicted.flatten(), target.flatten()
        correct = float(((predicted - target).abs() <= tolerance).float().mean())
        line = [0.0, 1.0]
        axes.fill_between(
            line,
            [v - tolerance for v in line],
            [v + tolerance for v in line],
            color="0.85",
            label=f"±{tolerance:g}",
        )
        axes.plot(line, line, color="0.4", linewidth=0.8)
        axes.scatter(target, predicted, s=6, color=COLOURS.get(cell), alpha=0.6)
        axes.set(
            xlim=(0, 1),
            ylim=(-0.1, 1.1),
            xlabel="target (product of the two marked values)",
            ylabel="prediction",
            title=f"{cell}: {correct:.1%} within ±{tolerance:g}",
        )
        axes.legend(loc="upper left")
    figure.suptitle("multiplication problem: test predictions against targets")
    figure.tight_layout()
    save_figure(figure, path, dpi=110)
