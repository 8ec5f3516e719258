"""The task suite's tables in the report: each task's score beside its source's figure."""

from __future__ import annotations

import math
from dataclasses import dataclass

from src.report.classic import ClassicFigure
from src.report.runs import Run, summarise

H97 = "Hochreiter & Schmidhuber 1997"


@dataclass(frozen=True)
class SuiteTask:
    title: str
    metric: str  # the source's correctness rule, as a fraction
    rule: str
    extra: str  # a second test metric, shown as a number
    figures: dict[str, ClassicFigure]


SUITE: dict[str, SuiteTask] = {
    "adding": SuiteTask(
        "Adding problem (1997, experiment 4)",
        "test/tolerance_accuracy",
        "|error| < 0.04 at the end",
        "test/mse",
        {"lstm": ClassicFigure("99.96% (1 wrong of 2,560, T = 100)", f"{H97}, Table 7")},
    ),
    "temporal_order": SuiteTask(
        "Temporal order (1997, experiment 6a)",
        "test/probability_error_accuracy",
        "every output within 0.3 of its target",
        "test/acc",
        {"lstm": ClassicFigure("99.96% (1 wrong of 2,560; 6b: 2 of 2,560)", f"{H97}, Table 9")},
    ),
    "reber": SuiteTask(
        "Embedded Reber grammar (1997, experiment 1)",
        "test/sequence_acc",
        "every step's possible next symbols the most active units",
        "test/key_acc",
        {
            "lstm": ClassicFigure(
                "all strings right in 97-100% of trials", f"{H97}, Table 1 (LSTM rows)"
            ),
            "rnn": ClassicFigure("Elman net: 0% of trials; RTRL: some fraction", f"{H97}, Table 1"),
        },
    ),
    "copy": SuiteTask(
        "Copy memory (Arjovsky, Shah & Bengio 2016)",
        "test/key_acc",
        "recalled symbols right",
        "test/loss",
        {},
    ),
    "chars": SuiteTask(
        "Next-character prediction",
        "test/acc",
        "next character right",
        "test/bits_per_symbol",
        {},
    ),
}
NO_SOURCE = ClassicFigure("-", "no published figure for this cell")


def copy_baseline(run: Run) -> str:
    data = run.config["data"]
    value = data["to_copy"] * math.log(data["categories"]) / (data["lag"] + 2 * data["to_copy"])
    return f"memoryless baseline: loss {value:.3f}"


def suite_table(task: str, cells: list[str], runs: list[Run]) -> list[str]:
    spec = SUITE[task]
    lines = [
        f"### {spec.title}: {spec.rule}",
        "",
        f"| cell | ours: {spec.metric} | {spec.extra} (mean) | s per epoch | source's figure "
        "| source |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for cell in cells:
        cell_runs = [r for r in runs if r.task == task and r.cell == cell]
        if not cell_runs:
            continue
        ours = summarise(r.metrics[spec.metric] for r in cell_runs)
        extra = summarise(r.metrics[spec.extra] for r in cell_runs).mean
        epoch = summarise(r.metrics["train_epoch_seconds"] or 0.0 for r in cell_runs).mean
        figure = spec.figures.get(cell, NO_SOURCE)
        spread = f" ± {100 * ours.sd:.1f}" if ours.sd is not None else ""
        lines.append(
            f"| {cell} | {100 * ours.mean:.1f}%{spread} ({100 * ours.low:.1f}-"
            f"{100 * ours.high:.1f}%, {ours.n} seeds) | {extra:.4g} | {epoch:.2f} "
            f"| {figure.text} | {figure.source} |"
        )
    note = [copy_baseline(next(r for r in runs if r.task == task))] if task == "copy" else []
    return [*lines, "", *(f"{n}." for n in note), ""]


def suite_section(study_tasks: list[str], cells: list[str], runs: list[Run]) -> list[str]:
    if not study_tasks:
        return []
    lines = [
        "## The task suite",
        "",
        "Each task's own correctness rule on its test split, 3 seeds per cell unless the study "
        "says otherwise (`conf/study.yaml`: `study.tasks`, `study.task_seeds`); protocols as "
        "in `conf/data/<task>.yaml`. The 1997 figures come from nets trained online until a "
        "stopping criterion, not from a fixed epoch budget.",
        "",
    ]
    for task in study_tasks:
        lines += suite_table(task, cells, runs)
    return lines
