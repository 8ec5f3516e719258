"""The figures of a finished run: learning curves, and the tested checkpoint's test predictions
(multiplication: prediction against target; MNIST: confusion matrix, misclassified digits)."""

from __future__ import annotations

import logging
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger
from omegaconf import DictConfig
from torch import Tensor

from src.data.in_memory import InMemoryDataModule
from src.models.inference import predict_split
from src.models.module import SequenceModule
from src.tracking.plots import (
    learning_curves,
    misclassified_grid,
    prediction_scatter,
    save_confusion_matrix,
)

log = logging.getLogger(__name__)


def save_run_plots(
    cfg: DictConfig,
    module: SequenceModule,
    datamodule: InMemoryDataModule,
    loggers: list[Logger],
    run_dir: Path,
    confusion: Tensor | None = None,
) -> dict[str, Path]:
    """Write the run's PNGs into `run_dir`; returns them by name. `confusion` is the test
    confusion matrix, computed beforehand on every rank (its compute() is a collective)."""
    plots: dict[str, Path] = {}
    csv_logger = next((lg for lg in loggers if isinstance(lg, CSVLogger)), None)
    if csv_logger is not None and (Path(csv_logger.log_dir) / "metrics.csv").is_file():
        curves = learning_curves(
            Path(csv_logger.log_dir) / "metrics.csv", run_dir / "learning_curves.png"
        )
        if curves is not None:
            plots["learning_curves"] = curves
    else:
        log.info("no CSV metrics (the csv logger is off): learning curves not drawn")

    if cfg.data.get("name") not in ("multiply", "adding", "mnist"):
        return plots  # the figures below draw digits or one regression target
    test = predict_split(module, datamodule, "test")
    if cfg.data.task == "regression":
        plots["predictions"] = prediction_scatter(
            test.targets, test.outputs, float(cfg.data.tolerance), run_dir / "predictions.png"
        )
    else:
        if confusion is not None:
            plots["confusion_matrix"] = save_confusion_matrix(confusion, run_dir)
        plots["misclassified"] = misclassified_grid(
            test.inputs, test.targets, test.outputs.argmax(dim=-1), run_dir / "misclassified.png"
        )
    return plots
