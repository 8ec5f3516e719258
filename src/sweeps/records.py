"""The record a failed job leaves in its directory: `failure.json`, with why it failed.

    {"job": 3, "reason": "diverged", "status": 1, "message": "...", "overrides": [...]}

`reason` is a few words: refused config, data error, diverged, disk full, signal SIGINT,
signal SIGTERM, crashed. A job that is run again removes its record first.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from src.atomic import write_json

FAILURE_FILE = "failure.json"


@dataclass(frozen=True)
class Failure:
    job: int
    reason: str
    status: int
    message: str
    overrides: list[str]


def write_failure(job_dir: Path, failure: Failure) -> None:
    write_json(job_dir / FAILURE_FILE, asdict(failure))


def read_failure(job_dir: Path) -> Failure | None:
    """The job's failure record; None when it has none, or one that cannot be read."""
    try:
        content = json.loads((job_dir / FAILURE_FILE).read_text())
        return Failure(
            job=int(content["job"]),
            reason=str(content["reason"]),
            status=int(content["status"]),
            message=str(content["message"]),
            overrides=[str(o) for o in content["overrides"]],
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def clear_failure(job_dir: Path) -> None:
    (job_dir / FAILURE_FILE).unlink(missing_ok=True)
