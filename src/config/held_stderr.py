"""Hydra's own error text, held back until the job starts, so that a refused command line ends
in one line.

Hydra answers a command line it cannot compose with several lines on stderr (its message, the
OmegaConf error under it, "Set the environment variable HYDRA_FULL_ERROR=1 ...") and exits 1,
with no hook for the text. `run_main` holds what is written to stderr until Hydra starts the job
(the `ReleaseStderr` callback, conf/hydra/default.yaml); nothing else writes there before. When
the command ends before a job started, the held text is replaced by one line: seqlab's own
explanation of the mistake where it has one, else Hydra's message joined into a line. A held
traceback (a bug, not a mistake) is written out as it was.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

FULL_ERROR_HINT = "Set the environment variable HYDRA_FULL_ERROR=1"
SEARCH_PATH = "Config search path:"


class HeldStream:
    """A text stream that holds what is written until `release`, then writes through."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.held: list[str] = []
        self.holding = True

    def write(self, text: str) -> int:
        if self.holding:
            self.held.append(text)
            return len(text)
        return self.stream.write(text)

    def flush(self) -> None:
        if not self.holding:
            self.stream.flush()

    def release(self) -> None:
        """Write out what was held, and everything from now on."""
        if self.holding:
            self.holding = False
            self.stream.write("".join(self.held))
            self.held.clear()

    def take(self) -> str:
        """What was held, no longer held nor written; write through from now on."""
        text = "".join(self.held)
        self.held.clear()
        self.holding = False
        return text

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, ...
        return getattr(self.stream, name)


def one_line(hydra_text: str) -> str:
    """Hydra's message (without its HYDRA_FULL_ERROR advice) as one line."""
    kept = []
    for line in (line.strip() for line in hydra_text.splitlines()):
        if line.startswith(SEARCH_PATH):
            break  # Hydra's search path, line by line: not the mistake
        if line and not line.startswith(FULL_ERROR_HINT):
            kept.append(line)
    return " ".join(kept)


def release_stderr() -> None:
    if isinstance(sys.stderr, HeldStream):
        sys.stderr.release()


class ReleaseStderr(Callback):
    """Hydra callback: the job starts, so stderr is the job's to write."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        release_stderr()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        release_stderr()
