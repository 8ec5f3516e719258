"""reports/results.json: every run of the study and each cell's summary, for other programs."""

from __future__ import annotations

from typing import Any

from src.report.published import TASKS
from src.report.runs import Run, group_runs
from src.report.stats import summarise


def run_record(run: Run) -> dict[str, Any]:
    metrics = run.metrics
    return {
        "task": run.task,
        "protocol": run.protocol,
        "cell": run.cell,
        "seed": run.seed,
        "metric": TASKS[run.task].metric,
        "score": run.score,
        "test": {key: value for key, value in metrics.items() if key.startswith("test/")},
        "epochs": metrics["epochs"],
        "train_epoch_seconds": metrics["train_epoch_seconds"],
        "fit_seconds": metrics.get("fit_seconds"),
        "num_params": metrics["num_params"],
        "run_dir": str(run.path),
    }


def summary_records(runs: list[Run]) -> list[dict[str, Any]]:
    records = []
    for (task, protocol, cell), group in group_runs(runs, "task", "protocol", "cell").items():
        summary = summarise(run.score for run in group)
        records.append(
            {
                "task": task,
                "protocol": protocol,
                "cell": cell,
                "metric": TASKS[task].metric,
                "n": summary.n,
                "mean": summary.mean,
                "ci95": summary.ci95,
                "low": summary.low,
                "high": summary.high,
                "seeds": [run.seed for run in group],
            }
        )
    return records


def results_json(profile: str, runs: list[Run]) -> dict[str, Any]:
    return {
        "profile": profile,
        "runs": [run_record(run) for run in runs],
        "summaries": summary_records(runs),
    }
