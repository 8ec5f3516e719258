"""Reading uint8 IDX files (the MNIST format), gzip-compressed or plain, with strict validation."""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from src.config.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
MAX_DECOMPRESSED_BYTES = 128 * 1024 * 1024
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_CHUNK = 1 << 20
_UINT8 = 0x08


class IDXError(DataError, ValueError):
    """An invalid or unsupported IDX file; the message names the file and the problem."""


def iter_gunzip(f: BinaryIO, *, name: str, limit: int = MAX_DECOMPRESSED_BYTES) -> Iterator[bytes]:
    """Yield the decompressed content of a gzip stream, refusing more than `limit` bytes."""
    d = None
    total = 0
    pending = b""
    while True:
        if not pending:
            pending = f.read(_CHUNK)
            if not pending:
                break
        if d is None or d.eof:
            d = zlib.decompressobj(_GZIP_WBITS)  # gzip allows several concatenated members
        try:
            out = d.decompress(pending, limit + 1 - total)
        except zlib.error as e:
            raise IDXError(f"{name}: corrupt gzip stream ({e})") from e
        total += len(out)
        if total > limit:
            raise IDXError(f"{name}: decompresses to more than {limit} bytes; refused")
        if out:
            yield out
        pending = d.unused_data if d.eof else d.unconsumed_tail
    if d is None:
        raise IDXError(f"{name}: empty file")
    if not d.eof:
        raise IDXError(f"{name}: truncated gzip stream (ends before the end-of-stream marker)")


def parse_idx(data: bytes, *, name: str) -> np.ndarray:
    """Parse the bytes of an uncompressed uint8 IDX file (1 to 3 dimensions)."""
    if len(data) < 4:
        raise IDXError(f"{name}: too short for an IDX header ({len(data)} bytes, need 4)")
    if data[0] != 0 or data[1] != 0:
        raise IDXError(f"{name}: bad magic bytes 0x{data[:2].hex()} (expected 0x0000)")
    if data[2] != _UINT8:
        raise IDXError(
            f"{name}: unsupported type code 0x{data[2]:02x} "
            "(only 0x08, unsigned byte, is supported)"
        )
    ndim = data[3]
    if not 1 <= ndim <= 3:
        raise IDXError(f"{name}: unsupported number of dimensions {ndim} (expected 1 to 3)")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IDXError(
            f"{name}: truncated header: {ndim} dimensions need {header_len} bytes, "
            f"found {len(data)}"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    # Checked against the actual length before any allocation, so a lying header costs nothing.
    expected = math.prod(dims)
    found = len(data) - header_len
    if found < expected:
        raise IDXError(f"{name}: truncated: expected {expected} bytes of data, found {found}")
    if found > expected:
        raise IDXError(f"{name}: {found - expected} trailing bytes after {expected} bytes of data")
    return np.frombuffer(data, np.uint8, count=expected, offset=header_len).reshape(dims).copy()


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file, gzip-compressed (detected by its magic bytes) or plain."""
    path = Path(path)
    name = path.name
    with path.open("rb") as f:
        if f.read(2) == GZIP_MAGIC:
            f.seek(0)
            data = b"".join(iter_gunzip(f, name=name))
        else:
            size = path.stat().st_size
            if size > MAX_DECOMPRESSED_BYTES:
                raise IDXError(
                    f"{name}: {size} bytes is more than {MAX_DECOMPRESSED_BYTES}; refused"
                )
            f.seek(0)
            data = f.read()
    return parse_idx(data, name=name)


def load_images(path: Path) -> np.ndarray:
    """Load an MNIST image file as a [N, 28, 28] uint8 array."""
    images = read_idx(path)
    name = Path(path).name
    if images.ndim != 3:
        raise IDXError(f"{name}: expected 3 dimensions for images, found {images.ndim}")
    if images.shape[1:] != (28, 28):
        h, w = images.shape[1:]
        raise IDXError(f"{name}: expected 28x28 images, found {h}x{w}")
    return images


def load_labels(path: Path) -> np.ndarray:
    """Load an MNIST label file as an [N] int64 array of digits 0..9."""
    labels = read_idx(path)
    name = Path(path).name
    if labels.ndim != 1:
        raise IDXError(f"{name}: expected 1 dimension for labels, found {labels.ndim}")
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        i = int(bad[0])
        raise IDXError(
            f"{name}: {bad.size} labels outside 0..9 (first: {int(labels[i])} at index {i})"
        )
    return labels.astype(np.int64)
