"""reports/results.md: our figures beside the classic ones, readable without anything else."""

from __future__ import annotations

from typing import Any

from src.models.sequence_model import keras_parameter_count
from src.report.classic import CLASSIC, HEADLINE_METRIC, NO_FIGURE, TASK_TITLES
from src.report.runs import Run, Summary, summarise
from src.report.suite import SUITE, suite_section

INTRO = """\
We train three recurrent cells, the vanilla RNN (`rnn`), the LSTM and the GRU, on two classic
sequence tasks and set our test scores beside published ones.

* **Multiplication problem** (Hochreiter & Schmidhuber 1997, experiment 5): each sequence has
  {multiply_steps} steps of (marker, value) with value uniform in [0, 1); two steps are marked and
  the target is the product of their two values. A prediction is correct when it is within 0.04 of
  the target. The network must keep two numbers over dozens of steps, which the gated cells (LSTM,
  GRU) can and the vanilla RNN, whose gradients vanish over long spans, mostly cannot.
* **Sequential MNIST, row by row**: each 28x28 digit is read as 28 steps of 28 pixels and
  classified into 10 classes after the last row.
"""

QUICK_WARNING = """\
> **Quick profile.** These runs are a smoke test of the pipeline: {epochs} epochs of a few
> batches of each task. Their scores say that every stage ran, not how well the cells learn; run
> the full profile (`dvc exp run -S profile=full`, or `dvc repro` with the committed params.yaml)
> for numbers that can be set beside the classic ones.
"""


def percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def score(summary: Summary) -> str:
    if summary.sd is None:
        return percent(summary.mean)
    return (
        f"{percent(summary.mean)} ± {100 * summary.sd:.1f} "
        f"({percent(summary.low)}-{percent(summary.high)}, {summary.n} seeds)"
    )


def parameter_counts(run: Run) -> str:
    model = run.config["model"]
    keras = keras_parameter_count(
        model["cell"],
        model["input_size"],
        model["hidden_size"],
        model["num_layers"],
        model["output_size"],
    )
    return f"{run.metrics['num_params']:,} / {keras:,}"


def protocol_line(run: Run) -> str:
    data, model, config = run.config["data"], run.config["model"], run.config
    if run.task == "multiply":
        sizes = (
            f"{data['num_sequences']:,} sequences of {data['seq_len']} steps "
            f"({data['num_fit']:,} to fit, their last {data['val_fraction']:.0%} to validate)"
        )
    else:
        train = data.get("train_subset") or "all remaining"
        sizes = f"{train} training and {data['val_size']:,} validation images, the whole test split"
    return (
        f"**{run.task}**: {sizes}; {model['num_layers']} layer(s) of {model['hidden_size']} "
        f"units, Adam lr {config['optimizer']['lr']:g}, batch {data['batch_size']}, "
        f"{config['trainer']['max_epochs']} epochs; the checkpoint best on `{data['monitor']}` "
        f"is tested."
    )


def task_table(task: str, cells: list[str], runs: list[Run]) -> list[str]:
    metric = HEADLINE_METRIC[task]
    extra = "test MSE (mean)" if task == "multiply" else "test loss (mean)"
    lines = [
        f"### {TASK_TITLES[task]}",
        "",
        f"| cell | parameters (ours / Keras) | ours: {metric} | {extra} | classic | source |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for cell in cells:
        cell_runs = [r for r in runs if r.task == task and r.cell == cell]
        ours = summarise(r.metrics[metric] for r in cell_runs)
        loss = summarise(r.metrics["test/loss"] for r in cell_runs).mean
        classic = CLASSIC.get((task, cell), NO_FIGURE)
        lines.append(
            f"| {cell} | {parameter_counts(cell_runs[0])} | {score(ours)} | {loss:.4g} "
            f"| {classic.text} | {classic.source} |"
        )
    return [*lines, ""]


def headline_metric(task: str) -> str:
    return HEADLINE_METRIC[task] if task in HEADLINE_METRIC else SUITE[task].metric


def runs_table(runs: list[Run]) -> list[str]:
    lines = [
        "| task | cell | seed | test score | test loss | epochs | s per epoch | run |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for run in runs:
        metrics = run.metrics
        lines.append(
            f"| {run.task} | {run.cell} | {run.seed} "
            f"| {percent(metrics[headline_metric(run.task)])} | {metrics['test/loss']:.4g} "
            f"| {metrics['epochs']} | {seconds(metrics['train_epoch_seconds'])} | `{run.path}` |"
        )
    return [*lines, ""]


def results_markdown(profile: str, study: dict[str, Any], runs: list[Run]) -> str:
    cells = list(study["cells"])
    first = {task: next(r for r in runs if r.task == task) for task in ("multiply", "mnist")}
    lines = ["# Results: RNN, LSTM and GRU on two classic sequence tasks", ""]
    if profile != "full":
        epochs = first["multiply"].config["trainer"]["max_epochs"]
        lines += [QUICK_WARNING.format(epochs=epochs)]
    lines += [
        INTRO.format(multiply_steps=first["multiply"].config["data"]["seq_len"]),
        f"Profile `{profile}`. Protocols as run:",
        "",
        *(f"* {protocol_line(run)}" for run in first.values()),
        "",
        "## Our test scores beside the classic figures",
        "",
        *task_table("multiply", cells, runs),
        *task_table("mnist", cells, runs),
        *suite_section(list(study.get("tasks") or []), cells, runs),
        "Scores are means over seeds ± their standard deviation, with the lowest and highest "
        "run. Our parameter counts differ from Keras' for `rnn` and `lstm` because PyTorch keeps "
        "two bias vectors per gate where Keras keeps one; the GRU counts agree (Keras' "
        "`reset_after` GRU has two as well). The classic multiplication figures are ranges over "
        "repeated Keras runs of the same protocol; the 1997 paper trained its LSTM on its own "
        "variant of the task (`data.variant=paper_1997`) until the error was small.",
        "",
        "## Figures",
        "",
        "Learning curves (a line per seed; validation splits as in the protocols above):",
        "",
        "![multiplication learning curves](figures/curves_multiply.png)",
        "",
        "![MNIST learning curves](figures/curves_mnist.png)",
        "",
        "Test predictions against targets on the multiplication problem (each cell's first seed); "
        "points inside the grey band (±0.04) count as correct:",
        "",
        "![multiplication predictions](figures/predictions_multiply.png)",
        "",
        "Confusion matrices of the MNIST test split: "
        + ", ".join(
            f"[{r.cell}](../{r.path}/confusion_matrix.png)" for r in runs if r.task == "mnist"
        )
        + ".",
        "",
        "## Every run",
        "",
        *runs_table(runs),
        "## Reproduce",
        "",
        "```bash",
        "dvc pull            # fetch cached data and checkpoints, if a remote holds them",
        "dvc repro           # run whatever is out of date, then this report",
        "dvc metrics show    # every run's test metrics",
        "```",
        "",
        "Each run's directory holds its composed config (`config.yaml`), per-epoch metrics "
        "(`csv/metrics.csv`), the best and last checkpoints and `metrics.json`.",
        "",
    ]
    return "\n".join(lines)
