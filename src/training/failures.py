"""How a run that cannot go on ends: one clear message, a non-zero status, no traceback.

These are not config mistakes (src/config/errors.py) but things that happen to a run: a signal
asking it to stop, a loss that diverged, a disk that filled up. Each message says what happened,
what was saved and what to do next.
"""

from __future__ import annotations

import errno
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from lightning.pytorch.utilities.exceptions import SIGTERMException

from src.config.errors import CommandFailed
from src.training.divergence import TrainingDiverged
from src.training.signals import RunInterrupted, signal_name

# errno values of "the disk (or a quota, or a file size limit) has no room for this write".
NO_ROOM_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def no_room_message(error: OSError) -> str:
    where = f" {error.filename}" if error.filename else ""
    return (
        f"no room to write{where}: {error.strerror or error}. What that file held before is "
        "intact: run files are written to a temporary file and renamed. Free some space or set "
        "paths.output_dir to a disk with room, then resume with ckpt_path=last."
    )


def _exit(message: str, status: int, reason: str) -> NoReturn:
    """Say why on stderr and in the run's train.log, then exit with `status`."""
    print(f"seqlab: {message}", file=sys.stderr)
    record = logging.LogRecord("seqlab", logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    raise CommandFailed(status, reason, message)


@contextmanager
def exit_on_run_failure() -> Iterator[None]:
    """Interrupted: exit 128 + the signal's number, as a shell does; other failures: exit 1."""
    try:
        yield
    except RunInterrupted as error:
        _exit(str(error), 128 + error.signum, f"signal {signal_name(error.signum)}")
    except SIGTERMException:
        # Lightning's own SIGTERM handling outside of fitting (testing): its SystemExit says 0.
        _exit(
            "stopped by SIGTERM after training; resume with ckpt_path=last to test.",
            143,
            "signal SIGTERM",
        )
    except TrainingDiverged as error:
        _exit(f"training diverged: {error}", 1, "diverged")
    except OSError as error:
        if error.errno not in NO_ROOM_ERRNOS:
            raise
        _exit(no_room_message(error), 1, "disk full")
