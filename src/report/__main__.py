"""python -m src.report: reports/results.md and reports/figures/ from the study's runs."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from src.report.figures import learning_curves, predictions_vs_targets
from src.report.markdown import results_markdown
from src.report.predict import test_predictions
from src.report.runs import MissingRunError, load_study
from src.run_dir import atomic_write_text

PARAMS_FILE = Path("params.yaml")
REPORT_DIR = Path("reports")


def write_report(params_file: Path = PARAMS_FILE, report_dir: Path = REPORT_DIR) -> Path:
    params = OmegaConf.to_container(OmegaConf.load(params_file))
    assert isinstance(params, dict)
    runs = load_study(params["study"])
    figures = report_dir / "figures"
    for task in ("multiply", "mnist"):
        learning_curves([r for r in runs if r.task == task], task, figures / f"curves_{task}.png")
    # One run per cell, its first seed, keeps the figure readable.
    first = {
        cell: next(r for r in runs if r.task == "multiply" and r.cell == cell)
        for cell in params["study"]["cells"]
    }
    predictions = {cell: test_predictions(run.best_checkpoint) for cell, run in first.items()}
    tolerance = float(first[params["study"]["cells"][0]].config["data"]["tolerance"])
    predictions_vs_targets(predictions, tolerance, figures / "predictions_multiply.png")
    path = report_dir / "results.md"
    atomic_write_text(path, results_markdown(params["profile"], params["study"], runs))
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
