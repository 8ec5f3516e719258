"""python -m src.report: reports/results.md, results.json and figures/ from the study's runs."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf
from torch import Tensor

from src.atomic import atomic_write_text, write_json
from src.models.inference import predict_split
from src.report.figures import learning_curves, predictions_vs_targets
from src.report.markdown import results_markdown
from src.report.results_json import results_json
from src.report.runs import STUDY_DIR, MissingRunError, load_study
from src.training.restore import restore_checkpoint

PARAMS_FILE = Path("params.yaml")
STUDY_FILE = Path("conf/study.yaml")
REPORT_DIR = Path("reports")


def test_predictions(checkpoint: Path) -> tuple[Tensor, Tensor]:
    """(model outputs, targets) on the test split of the run that saved `checkpoint`."""
    run = restore_checkpoint(checkpoint)
    test = predict_split(run.module, run.datamodule, "test")
    return test.outputs, test.targets


def write_report(
    params_file: Path = PARAMS_FILE,
    study_file: Path = STUDY_FILE,
    report_dir: Path = REPORT_DIR,
    study_dir: Path = STUDY_DIR,
) -> Path:
    profile = OmegaConf.load(params_file)["profile"]
    study = OmegaConf.to_container(OmegaConf.load(study_file)["study"])
    assert isinstance(study, dict)
    runs = load_study(study, study_dir)
    figures = report_dir / "figures"
    for task in dict.fromkeys(run.task for run in runs):
        learning_curves([r for r in runs if r.task == task], task, figures / f"curves_{task}.png")
    multiply = [r for r in runs if r.task == "multiply" and r.protocol == study["protocols"][-1]]
    if multiply:
        # One run per cell, its first seed, keeps the figure readable.
        first = {cell: next(r for r in multiply if r.cell == cell) for cell in study["cells"]}
        predictions = {cell: test_predictions(run.best_checkpoint) for cell, run in first.items()}
        tolerance = float(multiply[0].config["data"]["tolerance"])
        predictions_vs_targets(predictions, tolerance, figures / "predictions_multiply.png")
    write_json(report_dir / "results.json", results_json(profile, runs))
    path = report_dir / "results.md"
    atomic_write_text(path, results_markdown(profile, study, runs))
    return path


def main() -> None:
    try:
        path = write_report()
    except MissingRunError as error:
        print(f"seqlab: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"seqlab: wrote {path}")


if __name__ == "__main__":
    main()
