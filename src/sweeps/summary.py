"""One table of a sweep: every job's status, overrides and final metrics, and their spread over
seeds.

    python -m src.sweeps.summary outputs/multirun/<time>      # any existing sweep directory

The same is written after every job and when the multirun ends (`SweepSummary`, configured in
conf/hydra/default.yaml). Every job the sweep was to run is listed (sweep_plan.yaml): done,
failed with its reason (failure.json), incomplete (it started and left no result: killed, or
still running), or never started. Written into the sweep directory:

    sweep_summary.csv           one row per job: status, reason, overrides, the numbers of
                                metrics.json
    sweep_summary_grouped.csv   per combination of overrides other than `seed`: the number of
                                jobs, and mean and standard deviation of every metric
    sweep_summary.md            both tables, and the best job
    best_config.yaml            the composed config of the best job by the validation metric it
                                monitored (`best_<data.monitor>`, in `data.monitor_mode`), with
                                best_overrides.yaml; only when all jobs monitor the same metric.
                                When the sweep replicates seeds, the best job of the combination
                                with the best mean over its seeds (every one of them done)
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from src.atomic import atomic_write_text
from src.sweeps.plan import SweepPlan, read_plan
from src.sweeps.records import FAILURE_FILE, read_failure

# Overrides whose values are replicates of one experiment, averaged over in the grouped table.
REPLICATE_KEYS = ("seed",)
# Metrics shown in the Markdown tables (the CSV files hold every number of metrics.json).
SHOWN_METRIC_PREFIXES = ("test/", "best_", "train_epoch_seconds")
# Files that show a job directory holds (or held) a job of the sweep.
JOB_FILES = ("overrides.yaml", FAILURE_FILE, "config.yaml", "metrics.json")
DONE, FAILED, INCOMPLETE, NEVER_STARTED = "done", "failed", "incomplete", "never started"
RERUN_COMMAND = "python -m src.sweeps.rerun"


@dataclass(frozen=True)
class Job:
    name: str
    directory: Path
    # The command-line overrides as given, and parsed into key -> value.
    override_list: list[str]
    overrides: dict[str, str]
    # The numbers of metrics.json; empty when it is missing (the job failed or is running).
    metrics: dict[str, float]
    status: str = DONE
    reason: str = ""
    # What the job's failure.json says happened; empty unless it failed.
    message: str = ""


@dataclass(frozen=True)
class Best:
    job: Job
    metric: str
    mode: str
    value: float
    # When the sweep replicates seeds: the jobs of the best combination, and their mean.
    replicates: tuple[Job, ...] = ()
    mean: float | None = None


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


def _job_dirs(sweep_dir: Path) -> list[Path]:
    found = {p.parent for name in JOB_FILES for p in sweep_dir.glob(f"*/{name}")}
    return sorted(found, key=_job_order)


def _metrics(directory: Path) -> dict[str, float]:
    try:
        raw = json.loads((directory / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    return {
        key: float(value)
        for key, value in raw.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def _load_job(directory: Path) -> Job:
    failure = read_failure(directory)
    override_list = failure.overrides if failure is not None else []
    if (directory / "overrides.yaml").is_file():
        override_list = [str(o) for o in OmegaConf.load(directory / "overrides.yaml")]
    metrics = _metrics(directory)
    # A job run again removes its failure.json first: one still there is its latest outcome.
    message = ""
    if failure is not None:
        status, reason, message = FAILED, failure.reason, failure.message
    elif metrics:
        status, reason = DONE, ""
    else:
        status, reason = INCOMPLETE, "no metrics.json: killed, or still running"
    return Job(
        directory.name,
        directory,
        override_list,
        parse_overrides(override_list),
        metrics,
        status,
        reason,
        message,
    )


def _never_started(sweep_dir: Path, plan: SweepPlan, started: set[str]) -> list[Job]:
    jobs = []
    for number in range(plan.planned or 0):
        if str(number) in started:
            continue
        override_list = plan.jobs[number] if plan.jobs is not None else []
        directory = sweep_dir / str(number)
        jobs.append(
            Job(
                str(number),
                directory,
                override_list,
                parse_overrides(override_list),
                {},
                NEVER_STARTED,
            )
        )
    return jobs


def load_jobs(sweep_dir: Path) -> list[Job]:
    """Every job of the sweep, in job order: those that left files, and those of its plan
    that never started."""
    jobs = [_load_job(directory) for directory in _job_dirs(sweep_dir)]
    plan = read_plan(sweep_dir)
    if plan is not None:
        jobs += _never_started(sweep_dir, plan, {job.name for job in jobs})
    return sorted(jobs, key=lambda job: _job_order(job.directory))


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
            job.status,
            job.reason,
            *(job.overrides.get(key, "") for key in override_keys),
            *(job.metrics.get(key, "") for key in metric_keys),
        ]
        for job in jobs
    ]
    return Table(["job", "status", "reason", *override_keys, *metric_keys], rows)


def _setting_keys(jobs: Sequence[Job]) -> list[str]:
    """The override keys that name a setting: all but the replicate keys."""
    return [k for k in _ordered_keys([job.overrides for job in jobs]) if k not in REPLICATE_KEYS]


def _by_setting(jobs: Sequence[Job], keys: Sequence[str]) -> dict[tuple[str, ...], list[Job]]:
    """The jobs grouped by their values of `keys`: each setting's replicates, in job order."""
    groups: dict[tuple[str, ...], list[Job]] = {}
    for job in jobs:
        groups.setdefault(tuple(job.overrides.get(k, "") for k in keys), []).append(job)
    return groups


def grouped_table(jobs: Sequence[Job]) -> Table:
    """Mean and sample standard deviation of every metric over the replicates of each group."""
    done = [job for job in jobs if job.metrics]
    group_keys = _setting_keys(done)
    metric_keys = sorted(_ordered_keys([job.metrics for job in done]))
    groups = _by_setting(done, group_keys)
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
    # A seed that failed or is still running counts against its setting, not for it.
    names = {job.name for job in candidates}
    combinations = [
        members
        for members in _by_setting(jobs, _setting_keys(jobs)).values()
        if all(job.name in names for job in members)
    ]
    if not any(len(members) > 1 for members in combinations):
        best = pick(candidates, key=lambda job: job.metrics[metric])
        return Best(best, metric, mode, best.metrics[metric])

    # One lucky seed says little about a setting (a vanilla RNN leaves a plateau on some seeds
    # and not others): with replicates, the best combination is the one with the best mean.
    def mean(group: Sequence[Job]) -> float:
        return statistics.fmean(job.metrics[metric] for job in group)

    members = pick(combinations, key=mean)
    best = pick(members, key=lambda job: job.metrics[metric])
    return Best(best, metric, mode, best.metrics[metric], tuple(members), mean(members))


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


def _status_cell(job: Job) -> str:
    return f"{job.status}: {job.reason}" if job.status == FAILED else job.status


def to_markdown(jobs: Sequence[Job], grouped: Table, best: Best | None, title: str) -> str:
    known = [job for job in jobs if job.override_list] or list(jobs)
    varying = [
        key
        for key in _ordered_keys([job.overrides for job in known])
        if len({job.overrides.get(key) for job in known}) > 1
    ]
    common = [f"`{k}={v}`" for k, v in known[0].overrides.items() if k not in varying]
    metric_keys = [k for k in sorted(_ordered_keys([job.metrics for job in jobs])) if _shown(k)]
    job_rows = [
        [
            job.name,
            _status_cell(job),
            *(job.overrides.get(key, "") for key in varying),
            *(job.metrics.get(key, "") for key in metric_keys),
        ]
        for job in jobs
    ]
    parts = [f"# Sweep {title}", ""]
    if common:
        parts += [f"Overrides of every job: {', '.join(common)}", ""]
    parts += [
        f"## Jobs ({count_line(jobs)})",
        "",
        _markdown(["job", "status", *varying, *metric_keys], job_rows),
        "",
    ]
    failed = [job for job in jobs if job.status == FAILED]
    if failed:
        parts += ["## Why jobs failed", ""]
        parts += [f"- job {job.name} ({job.reason}): {job.message}" for job in failed]
        parts.append("")

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
        parts += ["## Best job", ""]
        if best.mean is not None:
            setting = " ".join(
                f"{k}={v}"
                for k, v in best.job.overrides.items()
                if k in varying and k not in REPLICATE_KEYS
            )
            names = ", ".join(job.name for job in best.replicates)
            parts += [
                f"Best combination by the mean over {', '.join(REPLICATE_KEYS)}: "
                f"{setting or 'the only one'}, {best.metric} = {best.mean:.6g} ({best.mode}) "
                f"over jobs {names}. Its best job:",
                "",
            ]
        parts += [
            f"Job {best.job.name} ({overrides or 'the only combination'}): "
            f"{best.metric} = {best.value:.6g} ({best.mode}); config in best_config.yaml.",
            "",
        ]
    return "\n".join(parts)


def summarize(sweep_dir: Path) -> tuple[list[Job], Best | None]:
    """Write the summary files into `sweep_dir`; return its jobs and the best one, if any."""
    jobs = load_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"no job directories in {sweep_dir}")
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
    return jobs, best


def summarize_quietly(sweep_dir: Path) -> None:
    """The summary as it stands, between jobs: a failure to write it never fails a job."""
    try:
        summarize(sweep_dir)
    except Exception as error:  # the job's own outcome is what counts here
        print(f"seqlab: could not update the sweep summary: {error}", file=sys.stderr)


def count_line(jobs: Sequence[Job]) -> str:
    """`6 jobs: 3 done, 2 failed, 1 never started`."""
    counts = Counter(job.status for job in jobs)
    parts = [f"{counts[s]} {s}" for s in (DONE, FAILED, INCOMPLETE, NEVER_STARTED) if counts[s]]
    return f"{len(jobs)} job{'s' * (len(jobs) != 1)}: {', '.join(parts)}"


def _brace(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else "{" + ",".join(names) + "}"


def outcome_line(sweep_dir: Path, jobs: Sequence[Job]) -> str | None:
    """The sweep's last line when a job did not finish: how many, why, their logs, and the
    command that runs them again; None when every job is done."""
    unfinished = [job for job in jobs if job.status != DONE]
    if not unfinished:
        return None
    failed = [job for job in unfinished if job.status == FAILED]
    reasons = Counter(job.reason for job in failed)
    parts = []
    if failed:
        why = ", ".join(f"{n} {reason}" for reason, n in reasons.items())
        parts.append(f"{len(failed)} of {len(jobs)} jobs failed ({why})")
    for status in (INCOMPLETE, NEVER_STARTED):
        if n := sum(job.status == status for job in unfinished):
            parts.append(f"{n} {status}" if parts else f"{n} of {len(jobs)} jobs {status}")
    logged = [job.name for job in unfinished if (job.directory / "train.log").is_file()]
    logs = f"; logs: {sweep_dir}/{_brace(logged)}/train.log" if logged else ""
    return (
        f"seqlab: {', '.join(parts)}{logs}; why each failed: {sweep_dir / 'sweep_summary.md'}; "
        f"run them again: {RERUN_COMMAND} {sweep_dir}"
    )


def report(sweep_dir: Path, jobs: Sequence[Job], best: Best | None) -> None:
    print(
        f"seqlab: sweep summary ({count_line(jobs)}) in {sweep_dir}/sweep_summary.{{md,csv}}",
        flush=True,
    )
    if best is not None and best.mean is not None:
        print(
            f"seqlab: best combination by its mean over {len(best.replicates)} "
            f"{'/'.join(REPLICATE_KEYS)}s: {best.metric} = {best.mean:.6g}",
            flush=True,
        )
    if best is not None:
        print(
            f"seqlab: best job {best.job.name}: {best.metric} = {best.value:.6g} with "
            f"{' '.join(best.job.override_list)}\n"
            f"seqlab: its config: {sweep_dir / 'best_config.yaml'}",
            flush=True,
        )


def finish_sweep(sweep_dir: Path) -> list[Job]:
    """Summarize a sweep that has ended, or stopped; print where the summary is and, last, what
    did not finish. Returns the jobs."""
    if not any(sweep_dir.glob("*/*")) and read_plan(sweep_dir) is None:
        return []
    jobs, best = summarize(sweep_dir)
    report(sweep_dir, jobs, best)
    line = outcome_line(sweep_dir, jobs)
    if line is not None:
        print(line, file=sys.stderr, flush=True)
    return jobs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.sweeps.summary", description=__doc__)
    parser.add_argument(
        "sweep_dir", type=Path, help="a multirun directory, outputs/multirun/<time>"
    )
    args = parser.parse_args(argv)
    try:
        jobs, best = summarize(args.sweep_dir)
    except FileNotFoundError as error:
        print(f"seqlab: {error}", file=sys.stderr)
        return 2
    report(args.sweep_dir, jobs, best)
    line = outcome_line(args.sweep_dir, jobs)
    if line is not None:
        print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
