"""reports/results.md: our figures beside the published ones, readable without anything else."""

from __future__ import annotations

from itertools import combinations
from typing import Any

from src.data.copy_memory import memoryless_cross_entropy
from src.models.sequence_model import keras_parameter_count
from src.report.published import NO_FIGURE, TASKS
from src.report.runs import Run, group_runs
from src.report.stats import Difference, Summary, difference, summarise

INTRO = """\
We train three recurrent cells, the vanilla RNN (`rnn`), the LSTM and the GRU, on classic
sequence tasks and set our test scores beside published ones, under two protocols: the task's
**classic** one, and the **best** one the pipeline's own search found on the validation split
(`hparams_search=<task>_protocol`; reports/search/). Both train the same model: the same
hidden size, layers and parameter count.

* **Multiplication problem** (Hochreiter & Schmidhuber 1997, experiment 5): each sequence has
  {multiply_steps} steps of (marker, value) with value uniform in [0, 1); two steps are marked and
  the target is the product of their two values. A prediction is correct when it is within 0.04 of
  the target. The network must keep two numbers over dozens of steps, which the gated cells (LSTM,
  GRU) can and the vanilla RNN, whose gradients vanish over long spans, mostly cannot.
* **Sequential MNIST, row by row**: each 28x28 digit is read as 28 steps of 28 pixels and
  classified into 10 classes after the last row.
"""

SUITE = """\
* **The task suite** (`study.tasks` in conf/study.yaml; README's "The task suite"): {titles}.
  Their sources count a net as successful when it gets every test sequence right, so each of
  their tables is followed by the number of seeds that do.
"""

QUICK_WARNING = """\
> **Quick profile.** These runs are a smoke test of the pipeline: {epochs} epochs of a few
> batches of each task. Their scores say that every stage ran, not how well the cells learn; run
> the full profile (`dvc exp run -S profile=full`, or `dvc repro` with the committed params.yaml)
> for numbers that can be set beside the published ones.
"""

STATISTICS = """\
Scores are means over seeds ± the half-width of their 95% confidence interval (Student's t), with
the lowest and highest seed; every seed is in the list of runs below and in
[results.json](results.json). Two cells' difference counts as larger than the seeds' spread when
the 95% interval of the difference of their means (Welch's t-test, which does not assume equal
spreads) excludes zero. With 5 seeds that is a coarse test: read a difference "within the
spread" as not shown, not as absent.
"""


def percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def score(summary: Summary) -> str:
    if summary.ci95 is None:
        return f"{percent(summary.mean)} (1 seed)"
    return (
        f"{percent(summary.mean)} ± {100 * summary.ci95:.1f} "
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


def scheduler_name(config: dict[str, Any]) -> str | None:
    scheduler = config.get("scheduler")
    return None if not scheduler else scheduler["_target_"].rsplit(".", 1)[-1]


def training_settings(run: Run) -> list[str]:
    """How a run was trained, from its saved config, in the order a reader compares them."""
    data, model, config = run.config["data"], run.config["model"], run.config
    optimizer = config["optimizer"]
    parts = [f"{optimizer['_target_'].rsplit('.', 1)[-1]} lr {optimizer['lr']:.3g}"]
    if optimizer.get("weight_decay"):
        parts.append(f"weight decay {optimizer['weight_decay']:g}")
    if (scheduler := scheduler_name(config)) is not None:
        parts.append(f"{scheduler} schedule")
    if (clip := config["trainer"].get("gradient_clip_val")) is not None:
        parts.append(f"gradient norm clipped at {clip:g}")
    if model.get("dropout"):
        parts.append(f"dropout {model['dropout']:g}")
    if model.get("init") == "chrono" and run.cell != "rnn":  # the RNN has no gate to open
        parts.append(f"chrono init up to {model['chrono_max_lag']} steps")
    parts.append(f"batch {data['batch_size']}")
    parts.append(f"{config['trainer']['max_epochs']} epochs")
    if "early_stopping" in (config.get("callbacks") or {}):
        patience = config["callbacks"]["early_stopping"]["patience"]
        parts.append(f"early stopping after {patience} epochs without a better `{data['monitor']}`")
    if data.get("regime") == "online":
        parts.append("fresh training sequences every epoch (online)")
    if shift := data.get("augment_shift"):
        pixels = "pixel" if shift == 1 else "pixels"
        parts.append(f"training digits moved up to {shift} {pixels} each way, anew every epoch")
    return parts


def protocol_line(runs: list[Run]) -> str:
    """What one task's protocol trains and how: what its cells share, then what each sets."""
    first = runs[0]
    model, monitor = first.config["model"], first.config["data"]["monitor"]
    by_cell = {run.cell: training_settings(run) for run in reversed(runs)}
    shared = [part for part in by_cell[first.cell] if all(part in p for p in by_cell.values())]
    own = {cell: [p for p in parts if p not in shared] for cell, parts in by_cell.items()}
    per_cell = "".join(
        f"; {cell}: {', '.join(parts)}" for cell, parts in reversed(own.items()) if parts
    )
    return (
        f"**{first.task}, {first.protocol}**: {model['num_layers']} layer(s) of "
        f"{model['hidden_size']} units; {'; '.join(shared)}{per_cell}; the checkpoint best on "
        f"`{monitor}` is tested."
    )


def cell_runs(runs: list[Run], task: str, protocol: str, cell: str) -> list[Run]:
    return [r for r in runs if (r.task, r.protocol, r.cell) == (task, protocol, cell)]


def scores(runs: list[Run]) -> list[float]:
    return [r.score for r in runs]


def task_table(task: str, protocols: list[str], cells: list[str], runs: list[Run]) -> list[str]:
    spec = TASKS[task]
    lines = [
        f"### {spec.title}: test `{spec.metric}` ({spec.rule})",
        "",
        "| cell | parameters (ours / Keras) | "
        + " | ".join(f"{p} protocol" for p in protocols)
        + " | published | source |",
        "| --- | ---: | " + " | ".join("---:" for _ in protocols) + " | ---: | --- |",
    ]
    for cell in cells:
        per_protocol = [cell_runs(runs, task, p, cell) for p in protocols]
        if not any(per_protocol):
            continue
        first = next(r for group in per_protocol for r in group)
        figure = spec.published.get(cell, NO_FIGURE)
        ours = [score(summarise(scores(group))) if group else "-" for group in per_protocol]
        lines.append(
            f"| {cell} | {parameter_counts(first)} | {' | '.join(ours)} "
            f"| {figure.text} | {figure.source} |"
        )
    return [*lines, ""]


def points(value: float) -> str:
    return f"{100 * value:+.1f}"


def comparison(diff: Difference) -> str:
    if diff.low is None or diff.high is None:
        return f"{diff.a} - {diff.b}: {points(diff.delta)} points (one seed: no interval)"
    verdict = "larger than the seeds' spread" if diff.beyond_spread else "within the seeds' spread"
    p_value = "" if diff.p_value is None else f", p = {diff.p_value:.2g}"
    return (
        f"{diff.a} - {diff.b}: {points(diff.delta)} points "
        f"(95% interval {points(diff.low)} to {points(diff.high)}{p_value}): {verdict}"
    )


def compared(label: str, runs: list[Run], other_label: str, other: list[Run]) -> Difference:
    return difference(label, scores(runs), other_label, scores(other))


def comparisons(task: str, protocols: list[str], cells: list[str], runs: list[Run]) -> list[str]:
    """Every pair of cells under each protocol, and each cell's last protocol against its first."""
    lines = []
    for protocol in protocols:
        groups = {cell: cell_runs(runs, task, protocol, cell) for cell in cells}
        pairs = [
            compared(b, groups[b], a, groups[a])
            for a, b in combinations(cells, 2)
            if groups[a] and groups[b]
        ]
        if pairs:
            lines.append(f"* {protocol} protocol: " + "; ".join(map(comparison, pairs)) + ".")
    if len(protocols) > 1:
        base, other = protocols[0], protocols[-1]
        pairs = [
            compared(f"{cell} {other}", new, base, old)
            for cell in cells
            if (new := cell_runs(runs, task, other, cell))
            and (old := cell_runs(runs, task, base, cell))
        ]
        if pairs:
            lines.append(f"* {other} against {base}: " + "; ".join(map(comparison, pairs)) + ".")
    if not lines:
        return []
    return ["Cells compared (difference of mean test scores, in points):", "", *lines, ""]


def copy_baseline(run: Run) -> str:
    data = run.config["data"]
    value = memoryless_cross_entropy(data["categories"], data["to_copy"], data["lag"])
    return f"Memoryless baseline of the copy task: loss {value:.3f}."


def criterion_met(task: str, protocols: list[str], cells: list[str], runs: list[Run]) -> list[str]:
    """How many seeds of each cell meet the source's criterion of every test sequence right."""
    criterion = TASKS[task].criterion
    if criterion is None:
        return []
    lines = []
    for protocol in protocols:
        counts = [
            f"{cell} {sum(r.score == 1.0 for r in group)} of {len(group)}"
            for cell in cells
            if (group := cell_runs(runs, task, protocol, cell))
        ]
        if counts:
            lines.append(f"* {protocol} protocol: {', '.join(counts)}.")
    if not lines:
        return []
    return [f"Seeds that meet the source's criterion ({criterion}):", "", *lines, ""]


def task_section(task: str, protocols: list[str], cells: list[str], runs: list[Run]) -> list[str]:
    task_runs = [r for r in runs if r.task == task]
    lines = [*task_table(task, protocols, cells, task_runs)]
    lines += criterion_met(task, protocols, cells, task_runs)
    lines += comparisons(task, protocols, cells, task_runs)
    if task == "copy" and task_runs:
        lines += [copy_baseline(task_runs[0]), ""]
    return lines


def runs_table(runs: list[Run]) -> list[str]:
    lines = [
        "| task | protocol | cell | seed | test score | test loss | epochs | s per epoch | run |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for run in runs:
        metrics = run.metrics
        lines.append(
            f"| {run.task} | {run.protocol} | {run.cell} | {run.seed} "
            f"| {percent(run.score)} | {metrics['test/loss']:.4g} "
            f"| {metrics['epochs']} | {seconds(metrics['train_epoch_seconds'])} | `{run.path}` |"
        )
    return [*lines, ""]


def results_markdown(profile: str, study: dict[str, Any], runs: list[Run]) -> str:
    cells, protocols = list(study["cells"]), list(study["protocols"])
    tasks = list(dict.fromkeys(r.task for r in runs))
    lines = ["# Results: RNN, LSTM and GRU on classic sequence tasks", ""]
    if profile != "full":
        epochs = runs[0].config["trainer"]["max_epochs"]
        lines += [QUICK_WARNING.format(epochs=epochs)]
    multiply_steps = next((r.config["data"]["seq_len"] for r in runs if r.task == "multiply"), 100)
    lines += [
        INTRO.format(multiply_steps=multiply_steps),
        *suite_intro(tasks),
        f"Profile `{profile}`. Protocols as run (`conf/experiment/<task>_<protocol>.yaml`):",
        "",
        *(f"* {protocol_line(group)}" for group in group_runs(runs, "task", "protocol").values()),
        "",
        "## Our test scores beside the published figures",
        "",
        STATISTICS,
    ]
    for task in tasks:
        lines += task_section(task, protocols, cells, runs)
    lines += [
        "Our parameter counts differ from Keras' for `rnn` and `lstm` because PyTorch keeps "
        "two bias vectors per gate where Keras keeps one; the GRU counts agree (Keras' "
        "`reset_after` GRU has two as well). The classic multiplication figures are ranges over "
        "repeated Keras runs of the same protocol; the 1997 paper trained its LSTM online on its "
        "own variant of the task (`data.variant=paper_1997`) until a stopping criterion, as it "
        "did on the other 1997 tasks.",
        "",
        "## Figures",
        "",
        "Learning curves, a row per protocol (a line per seed; validation splits as in the "
        "protocols above):",
        "",
        *(f"![{task} learning curves](figures/curves_{task}.png)\n" for task in tasks),
    ]
    if "multiply" in tasks:
        lines += [
            "Test predictions against targets on the multiplication problem (each cell's first "
            f"seed, {protocols[-1]} protocol); points inside the grey band (±0.04) count as "
            "correct:",
            "",
            "![multiplication predictions](figures/predictions_multiply.png)",
            "",
        ]
    mnist = [r for r in runs if r.task == "mnist" and r.seed == runs_seed(runs, "mnist")]
    if mnist:
        lines += [
            "Confusion matrices of the MNIST test split (first seed): "
            + ", ".join(
                f"[{r.cell}, {r.protocol}](../{r.path}/confusion_matrix.png)" for r in mnist
            )
            + ".",
            "",
        ]
    lines += [
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


def suite_intro(tasks: list[str]) -> list[str]:
    titles = [TASKS[task].title for task in tasks if TASKS[task].criterion is not None]
    return [SUITE.format(titles="; ".join(titles))] if titles else []


def runs_seed(runs: list[Run], task: str) -> int | None:
    return next((r.seed for r in runs if r.task == task), None)
