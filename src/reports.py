"""Files a run leaves for people to look at: the test confusion matrix as CSV and PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from torch import Tensor

from src.plots import save_figure
from src.run_dir import atomic_write_text


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
