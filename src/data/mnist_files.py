"""Fetching the four MNIST IDX files from a local mirror or HTTP mirrors, verified by checksum.

Kept rather than `torchvision.datasets.MNIST`: torchvision checks the MD5 of the compressed
files, so a mirror that recompresses them fails; it serves a local directory only by patching
its class's mirror list; and its wheels pin one exact torch version, which would fight the
platform's own torch build.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import http.client
import logging
import os
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from src.config.errors import DataError
from src.data.idx import GZIP_MAGIC, MAX_DECOMPRESSED_BYTES, IDXError, iter_gunzip

logger = logging.getLogger(__name__)

# sha256 of the DECOMPRESSED content: mirrors may recompress the files, the IDX bytes never change.
MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz": (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
    ),
    "train-labels-idx1-ubyte.gz": (
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
    ),
    "t10k-images-idx3-ubyte.gz": (
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
    ),
    "t10k-labels-idx1-ubyte.gz": (
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
    ),
}
MIRROR_ENV_VAR = "SEQLAB_MNIST_MIRROR"
_CHUNK = 1 << 16
_PART_SUFFIX = ".part"
STALE_PART_SECONDS = 3600


class MNISTFetchError(DataError):
    """No source yielded a verified copy of an MNIST file."""


class _SourceError(Exception):
    """One attempt at one source failed; `transient` failures are worth retrying."""

    def __init__(self, reason: str, *, transient: bool = False, unreachable: bool = False):
        super().__init__(reason)
        self.transient = transient
        self.unreachable = unreachable


def decompressed_sha256(path: Path) -> str:
    """sha256 of a gzip file's decompressed content, streamed; raises IDXError if not valid gzip."""
    path = Path(path)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        head = f.read(2)
        if not head:
            raise IDXError(f"{path.name}: empty file")
        if head != GZIP_MAGIC:
            raise IDXError(f"{path.name}: not gzip (starts with {head + f.read(14)!r})")
        f.seek(0)
        for chunk in iter_gunzip(f, name=path.name):
            digest.update(chunk)
    return digest.hexdigest()


def _local_dir(source: str) -> Path | None:
    """The directory a source names if it is local (a path or a file:// URL), else None."""
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    return Path(source) if not parsed.scheme else None


def _copy_local(src: Path, out: BinaryIO) -> None:
    try:
        with src.open("rb") as f:
            shutil.copyfileobj(f, out, _CHUNK)
    except FileNotFoundError as e:
        raise _SourceError("file not found") from e
    except OSError as e:
        raise _SourceError(f"cannot read ({e})") from e


def _download(url: str, out: BinaryIO, *, name: str, timeout: float, progress: bool) -> None:
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "seqlab"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and total > MAX_DECOMPRESSED_BYTES:
                raise _SourceError(f"Content-Length {total} is more than {MAX_DECOMPRESSED_BYTES}")
            with tqdm(
                total=total,
                desc=name,
                unit="B",
                unit_scale=True,
                leave=False,
                disable=None if progress else True,
            ) as bar:
                written = 0
                while chunk := response.read(_CHUNK):
                    written += len(chunk)
                    if written > MAX_DECOMPRESSED_BYTES:
                        raise _SourceError(f"response larger than {MAX_DECOMPRESSED_BYTES} bytes")
                    out.write(chunk)
                    bar.update(len(chunk))
            # http.client ends the body quietly when the server hangs up early; say so here
            # rather than leave it to the gzip check, which would blame the file.
            if total is not None and written < total:
                msg = f"short body: connection closed after {written} of {total} bytes"
                raise _SourceError(msg, transient=True)
    except urllib.error.HTTPError as e:
        e.close()
        transient = e.code >= 500 or e.code == 429
        raise _SourceError(f"HTTP {e.code} {e.reason}", transient=transient) from e
    except urllib.error.URLError as e:
        if isinstance(e.reason, TimeoutError):
            raise _SourceError(f"timeout after {timeout:g}s", transient=True) from e
        if isinstance(e.reason, socket.gaierror):  # no DNS: offline, retrying will not help
            raise _SourceError(f"cannot resolve host ({e.reason})", unreachable=True) from e
        msg = f"connection failed ({e.reason})"
        raise _SourceError(msg, transient=True, unreachable=True) from e
    except TimeoutError as e:
        raise _SourceError(f"timeout after {timeout:g}s", transient=True) from e
    except (http.client.HTTPException, OSError) as e:
        raise _SourceError(f"transfer failed ({type(e).__name__}: {e})", transient=True) from e


def _verify(path: Path, sha256: str) -> None:
    try:
        actual = decompressed_sha256(path)
    except IDXError as e:
        raise _SourceError(str(e).removeprefix(f"{path.name}: ")) from e
    except OSError as e:
        raise _SourceError(f"cannot read ({e})") from e
    if actual != sha256.lower():
        raise _SourceError(
            f"checksum mismatch (decompressed sha256 {actual}, expected {sha256.lower()})"
        )


def _part_prefix(name: str) -> str:
    return f".{name}."


def _remove_stale_parts(raw_dir: Path, names: Iterable[str]) -> None:
    """Remove temporary files that a killed fetch left behind (an interrupted one removes its
    own), so they do not linger in raw_dir and in what DVC stores of it. Only files untouched
    for STALE_PART_SECONDS: another fetch still running into this folder writes far more often."""
    cutoff = time.time() - STALE_PART_SECONDS
    for name in names:
        for part in raw_dir.glob(f"{glob.escape(_part_prefix(name))}*{_PART_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                if part.stat().st_mtime < cutoff:
                    part.unlink()
                    logger.info("Removed %s, left by an interrupted fetch", part)


def _fetch_once(
    source: str, name: str, dest: Path, sha256: str, *, timeout: float, progress: bool
) -> None:
    """One attempt: copy or download into a temp file in dest's folder, verify, then rename."""
    local = _local_dir(source)
    with tempfile.NamedTemporaryFile(
        dir=dest.parent, delete=False, prefix=_part_prefix(name), suffix=_PART_SUFFIX
    ) as tmp:
        tmp_path = Path(tmp.name)
    try:
        with tmp_path.open("wb") as out:
            if local is not None:
                _copy_local(local / name, out)
            else:
                _download(_url(source, name), out, name=name, timeout=timeout, progress=progress)
        _verify(tmp_path, sha256)
        tmp_path.chmod(0o644)  # NamedTemporaryFile creates 0600
        os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


def _url(source: str, name: str) -> str:
    return source.rstrip("/") + "/" + name


def _label(source: str, name: str) -> str:
    local = _local_dir(source)
    return str(local / name) if local is not None else _url(source, name)


def _try_source(
    source: str,
    name: str,
    dest: Path,
    sha256: str,
    *,
    retries: int,
    timeout: float,
    backoff: float,
    progress: bool,
) -> None:
    scheme = urllib.parse.urlparse(source).scheme
    if _local_dir(source) is None and scheme not in ("http", "https"):
        raise _SourceError(f"unsupported URL scheme {scheme!r}")
    attempts = max(1, retries)
    for attempt in range(attempts):
        try:
            _fetch_once(source, name, dest, sha256, timeout=timeout, progress=progress)
            return
        except _SourceError as e:
            if not e.transient or attempt + 1 == attempts:
                if attempts > 1 and e.transient:
                    msg = f"{e} ({attempts} attempts)"
                    raise _SourceError(msg, unreachable=e.unreachable) from e
                raise
            delay = backoff * 2**attempt
            logger.warning(
                "%s: %s; retrying in %.1fs (%d/%d)",
                _label(source, name),
                e,
                delay,
                attempt + 2,
                attempts,
            )
            time.sleep(delay)


def fetch_mnist(
    raw_dir: Path,
    mirrors: Sequence[str],
    *,
    local_mirror: str | None = None,
    checksums: Mapping[str, str] = MNIST_SHA256,
    retries: int = 3,
    timeout: float = 30.0,
    backoff: float = 1.0,
    progress: bool = True,
) -> dict[str, Path]:
    """Make sure raw_dir holds a verified copy of each file in `checksums`; return their paths.

    Sources, in order: `local_mirror` (else $SEQLAB_MNIST_MIRROR), a directory or file:// URL,
    then each base URL in `mirrors`. Raises MNISTFetchError when no source has a valid copy.
    """
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(raw_dir, checksums)
    local = local_mirror if local_mirror is not None else os.environ.get(MIRROR_ENV_VAR) or None
    sources = ([local] if local else []) + list(mirrors)
    unreachable: dict[str, str] = {}  # so an offline run does not wait on every mirror per file
    paths: dict[str, Path] = {}
    for name, sha256 in checksums.items():
        dest = raw_dir / name
        failures: list[str] = []
        if dest.exists():
            try:
                _verify(dest, sha256)
                logger.debug("%s already present and verified", dest)
                paths[name] = dest
                continue
            except _SourceError as e:
                logger.warning("%s exists but is invalid (%s); fetching it again", dest, e)
                failures.append(f"existing {dest}: {e}")
        for source in sources:
            label = _label(source, name)
            if source in unreachable:
                failures.append(f"{label}: skipped, unreachable earlier ({unreachable[source]})")
                continue
            logger.info("Fetching %s from %s", name, label)
            try:
                _try_source(
                    source,
                    name,
                    dest,
                    sha256,
                    retries=retries,
                    timeout=timeout,
                    backoff=backoff,
                    progress=progress,
                )
            except _SourceError as e:
                logger.warning("%s: %s", label, e)
                failures.append(f"{label}: {e}")
                if e.unreachable:
                    unreachable[source] = str(e)
                continue
            logger.info("Verified %s", dest)
            paths[name] = dest
            break
        else:
            raise MNISTFetchError(_failure_message(name, raw_dir, sources, failures, checksums))
    return paths


def _failure_message(
    name: str, raw_dir: Path, sources: list[str], failures: list[str], checksums: Mapping[str, str]
) -> str:
    tried = "".join(f"\n  - {f}" for f in failures)
    if not sources:
        tried += f"\n  - none: no local mirror given, ${MIRROR_ENV_VAR} unset, and no mirrors"
    return (
        f"Could not obtain a verified copy of {name}. Sources tried:{tried}\n"
        f"To fix: set {MIRROR_ENV_VAR} (or data.mirror in the config) to a directory holding "
        f"the files {', '.join(checksums)}, or copy them into {raw_dir}."
    )
