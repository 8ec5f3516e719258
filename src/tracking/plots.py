"""Figures of a run, each saved as a PNG written atomically (temporary file, then rename), and the
test confusion matrix as CSV."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from src.atomic import atomic_write_bytes, atomic_write_text

SPLITS = ("train", "val")
# Metrics that shrink over orders of magnitude read better on a log axis.
LOG_SCALE_METRICS = ("loss", "mse", "mae")


def save_figure(figure: Figure, path: Path, dpi: int = 120) -> Path:
    image = io.BytesIO()
    try:
        figure.savefig(image, format=path.suffix.lstrip(".") or "png", dpi=dpi)
    finally:
        plt.close(figure)
    atomic_write_bytes(path, image.getbuffer())
    return path


def read_epoch_curves(metrics_csv: Path) -> dict[str, dict[int, float]]:
    """`{metric: {epoch: value}}` of the train/ and val/ columns; a later row of the same epoch
    (a resumed run repeating an interrupted epoch) replaces an earlier one."""
    curves: dict[str, dict[int, float]] = {}
    with metrics_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if not row.get("epoch"):
                continue
            epoch = int(float(row["epoch"]))
            for name, value in row.items():
                if value and name.split("/", 1)[0] in SPLITS:
                    curves.setdefault(name, {})[epoch] = float(value)
    return curves


def learning_curves(metrics_csv: Path, path: Path) -> Path | None:
    """One panel per metric, train and validation per epoch; None when nothing was logged."""
    curves = read_epoch_curves(metrics_csv)
    metrics = sorted({name.split("/", 1)[1] for name in curves}, key=lambda m: (m != "loss", m))
    if not metrics:
        return None
    columns = min(len(metrics), 2)
    rows = math.ceil(len(metrics) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.5 * rows), squeeze=False)
    for panel, metric in zip(axes.flat, metrics, strict=False):
        for split in SPLITS:
            points = sorted(curves.get(f"{split}/{metric}", {}).items())
            if points:
                epochs, values = zip(*points, strict=True)
                panel.plot(epochs, values, marker=".", label=split)
        if metric in LOG_SCALE_METRICS and all(
            value > 0
            for name, curve in curves.items()
            if name.endswith(f"/{metric}")
            for value in curve.values()
        ):
            panel.set_yscale("log")
        panel.set(xlabel="epoch", title=metric)
        panel.xaxis.set_major_locator(MaxNLocator(integer=True))
        panel.legend()
    for panel in list(axes.flat)[len(metrics) :]:
        panel.set_visible(False)
    figure.tight_layout()
    return save_figure(figure, path)


def prediction_scatter(targets: Tensor, predictions: Tensor, tolerance: float, path: Path) -> Path:
    """Prediction against target; points inside the band are correct (|error| <= tolerance)."""
    targets, predictions = targets.flatten().cpu(), predictions.flatten().cpu()
    correct = (predictions - targets).abs() <= tolerance
    low = float(min(targets.min(), predictions.min(), 0.0))
    high = float(max(targets.max(), predictions.max(), 1.0))
    figure, axes = plt.subplots(figsize=(5.5, 5.5))
    line = [low, high]
    axes.plot(line, line, color="black", linewidth=1)
    axes.fill_between(
        line,
        [v - tolerance for v in line],
        [v + tolerance for v in line],
        color="tab:green",
        alpha=0.15,
        label=f"|error| <= {tolerance:g}",
    )
    axes.scatter(targets[correct], predictions[correct], s=6, color="tab:green", label="correct")
    axes.scatter(targets[~correct], predictions[~correct], s=6, color="tab:red", label="wrong")
    accuracy = correct.float().mean().item()
    axes.set(xlabel="target", ylabel="prediction", xlim=line, ylim=line)
    axes.set_title(f"test predictions ({accuracy:.1%} within tolerance)")
    axes.legend(loc="upper left")
    figure.tight_layout()
    return save_figure(figure, path)


def misclassified_grid(
    images: Tensor, labels: Tensor, predicted: Tensor, path: Path, limit: int = 36
) -> Path:
    """The first `limit` misclassified images, titled `true -> predicted`."""
    wrong = (labels.cpu() != predicted.cpu()).nonzero().flatten()[:limit]
    columns = 6
    rows = max(1, math.ceil(len(wrong) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.8 * rows), squeeze=False)
    for panel in axes.flat:
        panel.axis("off")
    for panel, index in zip(axes.flat, wrong.tolist(), strict=False):
        panel.imshow(images[index].cpu().reshape(28, 28), cmap="gray_r")
        panel.set_title(f"{int(labels[index])} -> {int(predicted[index])}", fontsize=9)
    total = int((labels.cpu() != predicted.cpu()).sum())
    figure.suptitle(f"misclassified test digits: {total} (true -> predicted)")
    figure.tight_layout()
    return save_figure(figure, path)


def save_confusion_matrix(matrix: Tensor, run_dir: Path) -> Path:
    """Rows are true classes, columns predicted ones."""
    counts = matrix.cpu().long().tolist()
    classes = range(len(counts))
    header = "true\\predicted," + ",".join(str(c) for c in classes)
    rows = [f"{c}," + ",".join(str(n) for n in row) for c, row in zip(classes, counts, strict=True)]
    atomic_write_text(run_dir / "confusion_matrix.csv", "\n".join([header, *rows]) + "\n")

    figure, axes = plt.subplots(figsize=(6, 5.5))
    image = axes.imshow(matrix.cpu().float().log1p(), cmap="Blues")
    for true, row in enumerate(counts):
        for predicted, count in enumerate(row):
            colour = "white" if true == predicted else "black"
            axes.text(predicted, true, count, ha="center", va="center", fontsize=7, color=colour)
    axes.set(xlabel="predicted", ylabel="true", xticks=list(classes), yticks=list(classes))
    axes.set_title("test confusion matrix")
    figure.colorbar(image, ax=axes, label="log(1 + count)")
    figure.tight_layout()
    return save_figure(figure, run_dir / "confusion_matrix.png")
