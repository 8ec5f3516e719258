"""Atomic file writes: a temporary file in the same directory, then a rename.

Every file a run, a cache or a report writes goes through here, so a reader (or a resumed run)
sees the previous version or the new one, never half of one.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once: os.umask can only be read by setting it, which is not thread-safe.
_FILE_MODE = 0o666 & ~_umask()


def publish(tmp: str | Path, path: Path) -> None:
    """Rename a finished temporary file onto `path`, with the mode a plain open() would give
    (mkstemp makes files only their owner can read)."""
    os.chmod(tmp, _FILE_MODE)
    os.replace(tmp, path)


@contextmanager
def staged(path: Path) -> Iterator[Path]:
    """A temporary file beside `path` for the block to write, renamed onto `path` when the block
    ends and deleted if it raises (a killed writer's: see remove_stale_temporaries)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        publish(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror, str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes | memoryview, *, sync: bool = False) -> None:
    """Write `data` to `path` through a temporary file and a rename. `sync` flushes the data to
    disk before the rename, so not even a power cut can leave half a file."""
    with staged(path) as tmp, tmp.open("wb") as handle:
        handle.write(data)
        if sync:
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _finite(value: Any) -> Any:
    """NaN and infinities as null: JSON has no such numbers, and strict readers refuse them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Valid JSON always: a value that is not a finite number is written as null."""
    text = json.dumps(_finite(data), indent=2, sort_keys=True, allow_nan=False)
    atomic_write_text(path, text + "\n")


# What `staged` names its temporary files: ".<name>.<8 random>.tmp".
_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def remove_stale_temporaries(root: Path) -> list[Path]:
    """Delete the temporary files that killed writers left anywhere under `root` (never read:
    see publish). A SIGKILL can land in any write: a checkpoint's, a CSV row's, a plot's."""
    stale = [p for p in root.rglob(".*.tmp") if _TEMPORARY.fullmatch(p.name) and p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
