"""Run the unfinished jobs of a sweep again: `python -m src.sweeps.rerun <sweep dir>`.

    python -m src.sweeps.rerun outputs/multirun/<time>
    python -m src.sweeps.rerun outputs/multirun/<time> trainer.max_epochs=50   # and change this

Launches the sweep again with the command line it was first started with (sweep_plan.yaml),
into the same directory and with the same launcher. A job that finished is kept and not run
again; a failed, interrupted or never-started job runs, from its last checkpoint where it got
as far as one. The summary and the exit status then cover the whole sweep. Overrides given
here are added to every job that runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException

from src.sweeps.jobs import RERUN_ENV_VAR
from src.sweeps.plan import PLAN_FILE, read_plan

SWEEP_DIR_OVERRIDE = "hydra.sweep.dir="


def rerun_argv(plan_argv: Sequence[str], sweep_dir: Path, extra: Sequence[str]) -> list[str]:
    kept = [arg for arg in plan_argv if not arg.startswith(SWEEP_DIR_OVERRIDE)]
    return [*kept, *extra, f"{SWEEP_DIR_OVERRIDE}{sweep_dir}"]


def _parsed(argv: Sequence[str]) -> list[Override]:
    overrides = [arg for arg in argv if not arg.startswith("-")]
    return OverridesParser.create().parse_overrides(overrides)


def swept_keys(argv: Sequence[str]) -> set[str]:
    return {override.key_or_group for override in _parsed(argv) if override.is_sweep_override()}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m src.sweeps.rerun",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "sweep_dir", type=Path, help="a multirun directory, outputs/multirun/<time>"
    )
    parser.add_argument("overrides", nargs="*", help="overrides added to every job that runs")
    args = parser.parse_args(argv)
    plan = read_plan(args.sweep_dir)
    if plan is None:
        print(
            f"seqlab: {args.sweep_dir} has no {PLAN_FILE}: it is not the directory of a sweep "
            "(outputs/multirun/<time>), or the sweep was started before seqlab recorded plans.",
            file=sys.stderr,
        )
        raise SystemExit(2)
    try:
        changed = sorted(swept_keys(plan.argv) & {o.key_or_group for o in _parsed(args.overrides)})
    except HydraException as error:
        print(f"seqlab: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if changed:
        print(
            f"seqlab: {', '.join(changed)} is swept by this sweep, and a rerun runs the same "
            "jobs. To try other values, start a new sweep.",
            file=sys.stderr,
        )
        raise SystemExit(2)
    entry = importlib.import_module(plan.command)
    sys.argv = [plan.command, *rerun_argv(plan.argv, args.sweep_dir, args.overrides)]
    print(f"seqlab: running again the unfinished jobs of {args.sweep_dir}", flush=True)
    os.environ[RERUN_ENV_VAR] = "1"  # read by every job, in this process or its own
    try:
        entry.cli()
    finally:
        del os.environ[RERUN_ENV_VAR]


def cli() -> None:
    main()


if __name__ == "__main__":
    cli()
