"""One table of a sweep: every job's overrides and final metrics, and their spread over seeds.

    python -m src.sweeps.summary outputs/multirun/<time>      # any existing sweep directory

Hydra runs the same after every multirun (`SweepSummary`, configured in conf/hydra/default.yaml).
Written into the sweep directory:

    sweep_summary.csv           one row per job: its overrides and the numbers in metrics.json
    sweep_summary_grouped.csv   per combination of overrides other than `seed`: the number of
                                jobs, and mean and standard deviation of every metric
    sweep_summary.md            both tables, and the best job
    best_config.yaml            the composed config of the best job by the validation metric it
                                monitored (`best_<data.monitor>`, in `data.monitor_mode`), with
                                best_overrides.yaml; only when all jobs monitor the same metric
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from src.atomic import atomic_write_text

# Overrides whose values are replicates of one experiment, averaged over in the grouped table.
REPLICATE_KEYS = ("seed",)
# Metrics shown in the Markdown tables (the CSV files hold every number of metrics.json).
SHOWN_METRIC_PREFIXES = ("test/", "best_", "train_epoch_seconds")


@dataclass(frozen=True)
class Job:
    name: str
    directory: Path
    # The command-line overrides as given, and parsed into key -> value.
    override_list: list[str]
    overrides: dict[str, str]
    # The numbers of metrics.json; empty when it is missing (the job failed or is running).
    metrics: dict[str, float]


@dataclass(frozen=True)
class Best:
    job: Job
    metric: str
    mode: str
    value: float


@dataclass(frozen=True)
class Table:
    columns: list[str]
    rows: list[list[Any]]


def parse_overrides(overrides: Sequence[str]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for override in overrides:
        key, _, value = str(override).partition("=")
        parsed[key] = value
    return parsed


def _job_order(directory: Path) -> tuple[int, str]:
    return (int(directory.name), "") if directory.name.isdigit() else (sys.maxsize, directory.name)


def load_jobs(sweep_dir: Path) -> list[Job]:
    """Every job directory of the sweep (one that holds overrides.yaml), in job order."""
    jobs = []
    for directory in sorted((p.parent for p in sweep_dir.glob("*/overrides.yaml")), key=_job_order):
        override_list = [str(o) for o in OmegaConf.load(directory / "overrides.yaml")]
        metrics_file = directory / "metrics.json"
        raw = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
        numbers = {
            key: float(value)
            for key, value in raw.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        jobs.append(
            Job(directory.name, directory, override_list, parse_overrides(override_list), numbers)
        )
    return jobs


def _ordered_keys(dicts: Sequence[dict[str, Any]]) -> list[str]:
    keys: dict[str, None] = {}
    for mapping in dicts:
        keys.update(dict.fromkeys(mapping))
    return list(keys)


def job_table(jobs: Sequence[Job]) -> Table:
    override_keys = _ordered_keys([job.overrides for job in jobs])
    metric_keys = sorted(_ordered_keys([job.metrics for job in jobs]))
    rows = [
        [
            job.name,
            "done" if job.metrics else "no metrics.json",
            *(job.overrides.get(key, "") for key in override_keys),
            *(job.metrics.get(key, "") for key in metric_keys),
        ]
        for job in jobs
    ]
    return Table(["job", "status", *override_keys, *metric_keys], rows)


def grouped_table(jobs: Sequence[Job]) -> Table:
    """Mean and sample standard deviation of every metric over the replicates of each group."""
    done = [job for job in jobs if job.metrics]
    group_keys = [
        k for k in _ordered_keys([job.overrides for job in done]) if k not in REPLICATE_KEYS
    ]
    metric_keys = sorted(_ordered_keys([job.metrics for job in done]))
    groups: dict[tuple[str, ...], list[Job]] = {}
    for job in done:
        groups.setdefault(tuple(job.overrides.get(k, "") for k in group_keys), []).append(job)
    rows = []
    for values, members in groups.items():
        stats: list[Any] = []
        for key in metric_keys:
            samples = [job.metrics[key] for job in members if key in job.metrics]
            stats.append(statistics.fmean(samples) if samples else "")
            stats.append(statistics.stdev(samples) if len(samples) > 1 else "")
        rows.append([*values, len(members), *stats])
    stat_columns = [f"{key} {stat}" for key in metric_keys for stat in ("mean", "std")]
    return Table([*group_keys, "jobs", *stat_columns], rows)


def find_best(jobs: Sequence[Job]) -> Best | None:
    """The job with the best `best_<data.monitor>`, if all jobs monitor the same metric."""
    monitors = set()
    candidates = []
    for job in jobs:
        config_file = job.directory / "config.yaml"
        if not config_file.exists():
            continue
        data = OmegaConf.load(config_file).get("data", {})
        monitors.add((data.get("monitor"), data.get("monitor_mode")))
        metric = f"best_{data.get('monitor')}"
        if metric in job.metrics and math.isfinite(job.metrics[metric]):
            candidates.append(job)
    if len(monitors) != 1 or not candidates:
        return None
    ((monitor, mode),) = monitors
    metric = f"best_{monitor}"
    pick = max if mode == "max" else min
    best = pick(candidates, key=lambda job: job.metrics[metric])
    return Best(best, metric, mode, best.metrics[metric])


def to_csv(table: Table) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.columns)
    writer.writerows(table.rows)
    return buffer.getvalue()


def _cell(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _markdown(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _shown(column: str) -> bool:
    return column.startswith(SHOWN_METRIC_PREFIXES)


def to_markdown(jobs: Sequence[Job], grouped: Table, best: Best | None, title: str) -> str:
    varying = [
        key
        for key in _ordered_keys([job.overrides for job in jobs])
        if len({job.overrides.get(key) for job in jobs}) > 1
    ]
    common = [f"`{k}={v}`" for k, v in jobs[0].overrides.items() if k not in varying]
    metric_keys = [k for k in sorted(_ordered_keys([job.metrics for job in jobs])) if _shown(k)]
    job_rows = []
    for job in jobs:
        metrics = [job.metrics.get(key, "") for key in metric_keys]
        if not job.metrics:
            metrics = ["(no metrics.json)"] + [""] * (len(metric_keys) - 1)
        job_rows.append([job.name, *(job.overrides.get(key, "") for key in varying), *metrics])
    parts = [f"# Sweep {title}", ""]
    if common:
        parts += [f"Overrides of every job: {', '.join(common)}", ""]
    parts += [
        f"## Jobs ({len(jobs)})",
        "",
        _markdown(["job", *varying, *metric_keys], job_rows),
        "",
    ]

    group_keys = [c for c in grouped.columns[: grouped.columns.index("jobs")] if c in varying]
    shown = [k for k in metric_keys if f"{k} mean" in grouped.columns]
    group_rows = []
    for row in grouped.rows:
        cells = dict(zip(grouped.columns, row, strict=True))
        stats = []
        for key in shown:
            mean, std = cells[f"{key} mean"], cells[f"{key} std"]
            stats.append(f"{_cell(mean)} ± {_cell(std)}" if std != "" else _cell(mean))
        group_rows.append([*(cells[k] for k in group_keys), cells["jobs"], *stats])
    parts += [
        f"## Mean ± standard deviation over {', '.join(REPLICATE_KEYS)}",
        "",
        _markdown([*group_keys, "jobs", *shown], group_rows),
        "",
    ]
    if best is not None:
        overrides = " ".join(f"{k}={v}" for k, v in best.job.overrides.items() if k in varying)
        parts += [
            "## Best job",
            "",
            f"Job {best.job.name} ({overrides or 'the only combination'}): "
            f"{best.metric} = {best.value:.6g} ({best.mode}); config in best_config.yaml.",
            "",
        ]
    return "\n".join(parts)


def summarize(sweep_dir: Path) -> Best | None:
    """Write the summary files into `sweep_dir`; return the best job, if any."""
    jobs = load_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"no job directories with overrides.yaml in {sweep_dir}")
    grouped = grouped_table(jobs)
    best = find_best(jobs)
    atomic_write_text(sweep_dir / "sweep_summary.csv", to_csv(job_table(jobs)))
    atomic_write_text(sweep_dir / "sweep_summary_grouped.csv", to_csv(grouped))
    atomic_write_text(
        sweep_dir / "sweep_summary.md", to_markdown(jobs, grouped, best, sweep_dir.name)
    )
    if best is not None:
        config = (best.job.directory / "config.yaml").read_text()
        atomic_write_text(sweep_dir / "best_config.yaml", config)
        atomic_write_text(
            sweep_dir / "best_overrides.yaml", OmegaConf.to_yaml(best.job.override_list)
        )
    return best


def report(sweep_dir: Path, best: Best | None) -> None:
    print(f"seqlab: sweep summary in {sweep_dir}/sweep_summary.{{md,csv}}", flush=True)
    if best is not None:
        print(
            f"seqlab: best job {best.job.name}: {best.metric} = {best.value:.6g} with "
            f"{' '.join(best.job.override_list)}\n"
            f"seqlab: its config: {sweep_dir / 'best_config.yaml'}",
            flush=True,
        )


class SweepSummary(Callback):
    """Hydra callback: summarize the sweep directory when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not any(sweep_dir.glob("*/overrides.yaml")):
            return
        report(sweep_dir, summarize(sweep_dir))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.sweeps.summary", description=__doc__)
    parser.add_argument(
        "sweep_dir", type=Path, help="a multirun directory, outputs/multirun/<time>"
    )
    args = parser.parse_args(argv)
    try:
        best = summarize(args.sweep_dir)
    except FileNotFoundError as error:
        print(f"seqlab: {error}", file=sys.stderr)
        return 2
    report(args.sweep_dir, best)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
