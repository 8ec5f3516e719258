"""User mistakes: what they are, and how a command ends on one.

Every mistake a user can make (a config value, a missing or corrupt data file) is one of the two
exceptions below. A command ends on one with a single line on stderr and a non-zero status,
never a traceback. Nothing heavy is imported here: a refused config answers before torch or
Lightning loads.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn


class ConfigError(ValueError):
    """A mistake in the config; the message says which key and how to fix it. Exit status 2."""


class SweepError(ConfigError):
    """A mistake of a whole sweep, which every one of its jobs would meet: it stops the sweep
    at its first job rather than be recorded job after job."""


class DataError(RuntimeError):
    """Data that cannot be fetched, read or cached; the message says which file and what to do.
    Exit status 1."""


class CommandFailed(SystemExit):
    """How a command ends on a failure it has explained on stderr: its exit status, and, for
    the record a sweep keeps of each job, why (`reason`, a few words) and the message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(status)
        self.reason = reason
        self.message = message


REFUSED_SWEEP = "refused sweep"


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    try:
        yield
    except ConfigError as error:
        refuse(error)
    except DataError as error:
        print(f"seqlab: data error: {error}", file=sys.stderr)
        raise CommandFailed(1, "data error", str(error)) from None
    except Exception as error:
        # An instantiate() that is not instantiate_group()'s: still the config's mistake when a
        # library refused its arguments. Hydra's instantiation is loaded by then.
        from hydra.errors import InstantiationException

        if not isinstance(error, InstantiationException):
            raise
        from src.config.instantiate import instantiation_refusal

        refused = instantiation_refusal(error)
        if refused is None:
            raise
        refuse(refused)


def refuse(error: ConfigError) -> NoReturn:
    print(f"seqlab: config error: {error}", file=sys.stderr)
    reason = REFUSED_SWEEP if isinstance(error, SweepError) else "refused config"
    raise CommandFailed(2, reason, str(error)) from None
