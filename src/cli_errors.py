"""User mistakes end a command with one line on stderr and a non-zero status, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from hydra.errors import InstantiationException

from src.config_checks import ConfigError
from src.data.idx import IDXError
from src.data.mnist_files import MNISTFetchError
from src.data.tensor_cache import CacheError
from src.instantiation import instantiation_refusal


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    try:
        yield
    except ConfigError as error:
        _refuse(error)
    except InstantiationException as error:
        # An instantiate() that is not instantiate_group()'s: still the config's mistake.
        refused = instantiation_refusal(error)
        if refused is None:
            raise
        _refuse(refused)
    except (MNISTFetchError, IDXError, CacheError) as error:
        print(f"seqlab: data error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


def _refuse(error: ConfigError) -> NoReturn:
    print(f"seqlab: config error: {error}", file=sys.stderr)
    raise SystemExit(2) from None
