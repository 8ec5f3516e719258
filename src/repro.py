"""`dvc repro`, several stages at a time.

    python -m src.repro --jobs 2            # the whole pipeline, like `dvc repro`
    python -m src.repro --jobs 4 report     # what the report needs

DVC runs stages one after another, but it releases its repository lock while a stage's command
runs, so several `dvc repro --single-item` processes can run independent stages at once (DVC's
"parallel stage execution"). This schedules them over the pipeline's DAG: a stage starts once
every stage it depends on has finished, at most `--jobs` at a time, in dvc.yaml's order. Each
stage does exactly what `dvc repro` would do with it: it is skipped when up to date, its outputs
are cached and dvc.lock gets its entry. The study's runs set their threads themselves
(`study.threads` in conf/study.yaml), so a stage computes the same numbers whether it runs alone
or beside others; give `--jobs` as the machine's cores divided by those threads.

Like `dvc repro`, the first failure stops the pipeline: no new stage starts, the running ones
finish, and the failed stage's output is printed. Each stage's output is kept in
`.dvc/tmp/repro/<stage>.log`.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

LOG_DIR = Path(".dvc") / "tmp" / "repro"


@dataclass
class Pipeline:
    """Stages in dvc.yaml's order, and the stages each one depends on."""

    order: list[str]
    upstream: dict[str, set[str]]

    def closure(self, targets: Iterable[str]) -> list[str]:
        """The targets and everything they depend on, in dvc.yaml's order."""
        needed: set[str] = set()
        pending = list(targets)
        while pending:
            stage = pending.pop()
            if stage not in needed:
                needed.add(stage)
                pending.extend(self.upstream[stage])
        return [stage for stage in self.order if stage in needed]


def load_pipeline(root: Path) -> Pipeline:
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        repo = Repo(str(root))
    except NotDvcRepoError:
        raise SystemExit(
            f"seqlab: {root} is not a DVC repository. Fix: run python -m src.repro from the "
            "repository root (where dvc.yaml is)."
        ) from None
    with repo:
        graph = repo.index.graph
        stages = [stage for stage in repo.index.stages if stage.cmd]
        # An edge points from a stage to a stage whose outputs it reads.
        upstream = {
            stage.addressing: {dep.addressing for dep in graph.successors(stage) if dep.cmd}
            for stage in stages
        }
    return Pipeline([stage.addressing for stage in stages], upstream)


def resolve_targets(pipeline: Pipeline, targets: list[str]) -> list[str]:
    unknown = [target for target in targets if target not in pipeline.upstream]
    if unknown:
        # A foreach/matrix group by its name: `train_multiply` stands for all its items.
        groups = {t: [s for s in pipeline.order if s.startswith(f"{t}@")] for t in unknown}
        missing = [t for t, items in groups.items() if not items]
        if missing:
            raise SystemExit(
                f"seqlab: no stage named {', '.join(missing)} in dvc.yaml. Fix: one of "
                f"{', '.join(pipeline.order)} (or a matrix stage's name for all its items)."
            )
        targets = [s for t in targets for s in groups.get(t, [t])]
    return pipeline.closure(targets or pipeline.order)


@dataclass
class Running:
    stage: str
    process: subprocess.Popen
    log_path: Path
    started: float = field(default_factory=time.perf_counter)


def start(stage: str, root: Path) -> Running:
    log_path = root / LOG_DIR / f"{stage.replace('@', '-')}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "dvc", "--wait-for-lock", "repro", "--single-item", stage]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    return Running(stage, process, log_path)


def stage_ran(log_path: Path) -> bool:
    return "Running stage" in log_path.read_text(errors="replace")


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def run_pipeline(stages: list[str], upstream: dict[str, set[str]], jobs: int, root: Path) -> int:
    """Run `stages` (in a dependency-respecting order) at most `jobs` at a time; 0 when all
    succeed."""
    began = time.perf_counter()
    done: set[str] = set()
    waiting = list(stages)
    running: list[Running] = []
    failed: list[Running] = []
    try:
        while waiting or running:
            if not failed:
                for stage in [s for s in waiting if upstream[s] <= done]:
                    if len(running) == jobs:
                        break
                    waiting.remove(stage)
                    running.append(start(stage, root))
            for job in [job for job in running if job.process.poll() is not None]:
                running.remove(job)
                seconds = time.perf_counter() - job.started
                if job.process.returncode != 0:
                    failed.append(job)
                    outcome = f"FAILED (exit {job.process.returncode})"
                else:
                    done.add(job.stage)
                    outcome = "ran" if stage_ran(job.log_path) else "up to date"
                clock = time.perf_counter() - began
                print(f"[{clock:7.1f} s] {job.stage}: {outcome} in {seconds:.1f} s", flush=True)
            if failed and not running:
                break
            time.sleep(0.1)
    except KeyboardInterrupt:
        # Each training run saves a resumable checkpoint on SIGINT; wait for them to do so.
        for job in running:
            job.process.send_signal(signal.SIGINT)
        for job in running:
            job.process.wait()
        print("seqlab: interrupted; `python -m src.repro` again resumes", file=sys.stderr)
        return 130
    for job in failed:
        print(f"\n--- {job.stage} ({job.log_path}) ---\n{tail(job.log_path)}", file=sys.stderr)
    if failed:
        names = ", ".join(job.stage for job in failed)
        print(f"seqlab: stage {names} failed; {len(waiting)} stage(s) not run", file=sys.stderr)
        return 1
    print(f"all {len(stages)} stages done in {time.perf_counter() - began:.1f} s", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help="stages to reproduce (default: all)")
    parser.add_argument(
        "-j", "--jobs", type=int, default=os.cpu_count() or 1, help="stages at a time"
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    root = Path.cwd()
    pipeline = load_pipeline(root)
    stages = resolve_targets(pipeline, args.targets)
    return run_pipeline(stages, pipeline.upstream, args.jobs, root)


if __name__ == "__main__":
    sys.exit(main())
