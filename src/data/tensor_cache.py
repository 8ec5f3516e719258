"""Cache files of tensors that can always be rebuilt: written atomically, checked when read.

A cache holds the tensors, the key they were made for (parameters, or the digests of source
files) and a sha256 of the tensors' bytes. A file that is unreadable, of another layout or
fails its checksum is reported with a warning and treated as missing, so the caller rebuilds
it; one made for another key is rebuilt quietly.

The checksum stays although DVC hashes the stage outputs: DVC checks them only when it runs
(`dvc repro`, `dvc status`), while `python -m src.train` reads the cache directly, and a damaged
file there would otherwise train on garbage.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from src.atomic import atomic_write_bytes
from src.config.errors import DataError

log = logging.getLogger(__name__)

FORMAT = "seqlab-tensor-cache-1"


class CacheError(DataError):
    """A cache file that cannot be written; the message says where and how to fix it."""


def tensors_sha256(tensors: Mapping[str, Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name} {t.dtype} {tuple(t.shape)}\n".encode())
        digest.update(t.numpy())
    return digest.hexdigest()


def _problem(payload: Any) -> str | None:
    """Why `payload` is not an intact cache, or None."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        return "not a seqlab tensor cache (written by an older version, or damaged)"
    tensors = payload.get("tensors")
    if not isinstance(tensors, dict) or not all(
        isinstance(k, str) and isinstance(t, Tensor) for k, t in tensors.items()
    ):
        return "its tensors are missing or malformed"
    if tensors_sha256(tensors) != payload.get("sha256"):
        return "checksum mismatch: the tensors are not the ones written"
    return None


def load_cache(
    path: Path, key: Mapping[str, Any] | None, *, rebuild: str
) -> dict[str, Tensor] | None:
    """The tensors cached at `path` for `key` (None: any key), or None when they must be rebuilt;
    `rebuild` says how, for the log (e.g. "regenerating it")."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # damage shows up as zip, pickle, EOF or OS errors alike
        error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        log.warning("%s is unreadable (%s); %s", path, error, rebuild)
        return None
    problem = _problem(payload)
    if problem is not None:
        log.warning("%s is corrupt: %s; %s", path, problem, rebuild)
        return None
    if key is not None and payload.get("key") != dict(key):
        log.info("%s was made for %s, not %s; %s", path, payload.get("key"), dict(key), rebuild)
        return None
    return payload["tensors"]


def save_cache(path: Path, key: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> None:
    """Write via a temporary file in the same folder and rename, so no reader sees half a file
    and an interrupted write leaves nothing behind."""
    payload = {
        "format": FORMAT,
        "key": dict(key),
        "sha256": tensors_sha256(tensors),
        "tensors": dict(tensors),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    try:
        atomic_write_bytes(path, buffer.getbuffer())
    except OSError as e:
        raise CacheError(
            f"cannot write the data cache {path} ({e}); make {path.parent} writable, "
            f"or remove {path} if it is in the way, and run again"
        ) from e
